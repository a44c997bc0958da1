"""Compare completions of two models on held-out prompts of the bundled task, e.g. before and after DPO.

    python examples/sample.py --after lightning_logs/version_0/hf_model
    python examples/sample.py --after lightning_logs/version_0/hf_model --fast-dev-run   # 8 prompts (tests)

``--before`` defaults to the embedded SFT model. Prints a few greedy completions of each, and the
fraction of temperature-1 samples that the task's rule (``lightning_dpo.tasks.is_polite``) calls polite.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from lightning_dpo.embedded import DEFAULT_DATASET, DEFAULT_MODEL, resolve_dataset
from lightning_dpo.models import load_causal_lm, load_tokenizer
from lightning_dpo.tasks import is_polite


@torch.no_grad()
def complete(model, tokenizer, prompts: list[str], sample: bool, seed: int = 0) -> list[str]:
    tokenizer.padding_side = "left"  # generation continues from the right edge
    inputs = tokenizer(prompts, return_tensors="pt", padding=True)
    torch.manual_seed(seed)
    sampling = {"do_sample": True, "temperature": 1.0, "top_k": 0, "top_p": 1.0} if sample else {"do_sample": False}
    out = model.generate(**inputs, max_new_tokens=48, pad_token_id=tokenizer.pad_token_id, **sampling)
    return tokenizer.batch_decode(out[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", default=DEFAULT_MODEL)
    parser.add_argument("--after", required=True)
    parser.add_argument("--show", type=int, default=4, help="greedy completions to print")
    parser.add_argument("--num-samples", type=int, default=200, help="held-out prompts sampled at temperature 1")
    parser.add_argument("--fast-dev-run", action="store_true", help="2 greedy completions, 8 samples")
    args = parser.parse_args()
    if args.fast_dev_run:
        args.show, args.num_samples = 2, 8

    val = Path(resolve_dataset(DEFAULT_DATASET)) / "val.jsonl"
    prompts = [json.loads(line)["prompt"] for line in val.read_text().splitlines()][: args.num_samples]
    for name, path in (("before", args.before), ("after", args.after)):
        model, tokenizer = load_causal_lm(path).eval(), load_tokenizer(path)
        for prompt, text in zip(prompts, complete(model, tokenizer, prompts[: args.show], sample=False)):
            print(f"[{name}] {prompt.strip()!r} ->{text!r}")
        polite = sum(map(is_polite, complete(model, tokenizer, prompts, sample=True))) / len(prompts)
        print(f"[{name}] polite fraction of {len(prompts)} temperature-1 samples: {polite:.3f}\n")


if __name__ == "__main__":
    main()
