"""Build the film-reviews SFT model: a byte-level BPE tokenizer and a tiny Llama trained on task text.

The DPO paper's controlled-sentiment experiment starts from GPT-2 fine-tuned on IMDb reviews; this is that
model in miniature. The task text is :func:`lightning_dpo.tasks.reviews.write_review` continuations of the
train prompts, whose hidden star ratings are uniform over 1..5, so the model's temperature-1 samples spread
over the whole reward range (and rarely reach its top: that takes every adjective at the strongest grade).
The tokenizer, the architecture and the training loop are those of ``scripts/build_tiny_model.py``; with
the same arguments on the same machine the output is byte-identical.

    python scripts/build_reviews_sft.py --out lightning_dpo/assets/models/reviews-sft --seed 0
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
for path in (REPO_ROOT, REPO_ROOT / "scripts"):  # run as a plain script from a checkout
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import torch  # noqa: E402
from build_tiny_model import MAX_LENGTH, check_tokenizer, sha256, train, train_tokenizer  # noqa: E402
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM  # noqa: E402

from lightning_dpo.evaluation.generation import SamplingSettings  # noqa: E402
from lightning_dpo.onpolicy.sampling import sample_scored  # noqa: E402
from lightning_dpo.tasks.reviews import build_prompts, sentiment_reward, write_review  # noqa: E402

DEFAULT_OUT = "lightning_dpo/assets/models/reviews-sft"
MAX_NEW_TOKENS = 64  # the longest task reviews are about 45 tokens


def sft_corpus(seed: int, reviews_per_prompt: int) -> tuple[list, list[str]]:
    """(prompts, completions) of the SFT data: ``reviews_per_prompt`` reviews of every train prompt."""
    prompts = build_prompts(seed=0)["train"]  # the task's fixed splits; ``seed`` only draws the reviews
    rng = random.Random(seed)
    pairs = [(p, write_review(rng, p)) for p in prompts for _ in range(reviews_per_prompt)]
    return [p for p, _ in pairs], [c for _, c in pairs]


def tokenize_sft(tok, prompts: list[str], completions: list[str]) -> list[tuple[list[int], list[int]]]:
    """(input_ids, labels) with the loss on the completion + EOS; prompt and completion tokenised apart,
    as the preference data module does, so SFT sees the token boundaries DPO will see."""
    prompt_ids = tok(prompts)["input_ids"]  # with BOS
    completion_ids = tok(completions, add_special_tokens=False)["input_ids"]
    examples = []
    for p, c in zip(prompt_ids, completion_ids):
        c = c + [tok.eos_token_id]
        examples.append(((p + c)[:MAX_LENGTH], ([-100] * len(p) + c)[:MAX_LENGTH]))
    return examples


def describe(scores: list[float]) -> dict[str, float]:
    """The reward distribution summary the model card and the notes report."""
    ordered = sorted(scores)
    q = lambda f: ordered[min(len(ordered) - 1, int(f * len(ordered)))]  # noqa: E731
    return {
        "mean": statistics.fmean(scores), "std": statistics.pstdev(scores), "p10": q(0.1), "p50": q(0.5),
        "p90": q(0.9), "top": sum(s >= 1.0 for s in scores) / len(scores),
        "at_least_0.75": sum(s >= 0.75 for s in scores) / len(scores),
    }  # fmt: skip


MODEL_CARD = """\
# reviews-sft

A tiny Llama-style causal LM ({n_params:,} parameters, float32) supervised-fine-tuned on synthetic film
reviews (`lightning_dpo.tasks.reviews`): the SFT model of the bundled controlled-sentiment task, the DPO
paper's IMDb experiment in miniature. Each training review has a hidden star rating (uniform 1..5) and its
sentiment adjectives are drawn around it, so temperature-1 samples spread over the reward's range.

- Architecture: `LlamaForCausalLM`, hidden {hidden}, {layers} layers, {heads} heads, MLP {mlp}, tied
  embeddings, max {max_len} positions.
- Tokenizer: byte-level BPE, vocab {vocab}, trained on the SFT text; `<s>` (BOS, prepended automatically),
  `</s>` (EOS, appended to training completions), `<pad>`.
- Training: {steps} steps of AdamW (peak lr {lr}, warmup + cosine), batch {batch_size}, loss on completion
  tokens only, {n_examples} reviews ({per_prompt} per train prompt).
- Final train loss (mean of last 20 steps): {loss:.4f}
- Reward (`lightning_dpo.tasks.reviews.sentiment_reward`, mean adjective grade in [-1, 1]) of the
  training reviews: mean {corpus[mean]:+.3f}, std {corpus[std]:.3f}, share at the top (1.0) {corpus[top]:.3f}.
- Temperature-1 samples, {n_eval_prompts} val prompts x {k_eval}: mean {sft[mean]:+.3f}, std {sft[std]:.3f},
  p10 / p50 / p90 {sft[p10]:+.2f} / {sft[p50]:+.2f} / {sft[p90]:+.2f}, share at the top {sft[top]:.3f},
  share >= 0.75 {sft[at_least_0.75]:.3f}, ended with EOS {finished:.3f}.
- `model.safetensors` sha256: `{sha}`

Reproduce (deterministic on the same machine; torch {torch_version}, transformers {tf_version}):

```
{command}
```
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=DEFAULT_OUT, help="output model folder")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reviews-per-prompt", type=int, default=4)
    parser.add_argument("--steps", type=int, default=1500, help="optimizer steps")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3, help="peak learning rate")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--eval-prompts", type=int, default=200, help="val prompts sampled for the model card")
    parser.add_argument("--eval-k", type=int, default=8, help="samples per val prompt for the model card")
    args = parser.parse_args(argv)
    started = time.perf_counter()

    torch.manual_seed(args.seed)
    random.seed(args.seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(2)

    prompt_objs, completions = sft_corpus(args.seed, args.reviews_per_prompt)
    prompts = [p.text for p in prompt_objs]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    splits = build_prompts(seed=0)
    distinct = sorted(set(prompts))  # each prompt text once: the tokenizer sees every review once
    train_tokenizer(distinct + completions).save_pretrained(out)
    tok_config_path = out / "tokenizer_config.json"  # as build_tiny_model.py: loadable by transformers 4.x too
    tok_config = json.loads(tok_config_path.read_text(encoding="utf-8"))
    tok_config["tokenizer_class"] = "PreTrainedTokenizerFast"
    tok_config_path.write_text(json.dumps(tok_config, indent=2) + "\n", encoding="utf-8")
    held_out = [p.text for split in ("val", "test") for p in splits[split]]
    tok = check_tokenizer(out, distinct[:500] + completions[:2000] + held_out)
    print(f"tokenizer: {time.perf_counter() - started:.1f}s")

    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=args.hidden, num_hidden_layers=args.layers,
        num_attention_heads=4, num_key_value_heads=4, intermediate_size=3 * args.hidden,
        max_position_embeddings=MAX_LENGTH, tie_word_embeddings=True, attention_dropout=0.0,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    torch.manual_seed(args.seed)  # the weight init depends only on the seed
    model = LlamaForCausalLM(config)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"parameters: {n_params:,}")
    examples = tokenize_sft(tok, prompts, completions)
    t0 = time.perf_counter()
    loss = train(model, examples, steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                 pad_id=tok.pad_token_id)  # fmt: skip
    train_seconds = time.perf_counter() - t0
    print(f"SFT: {args.steps} steps in {train_seconds:.1f}s, final loss {loss:.4f}")
    model.generation_config = GenerationConfig(
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        max_new_tokens=MAX_NEW_TOKENS,
    )  # fmt: skip
    model.save_pretrained(out)
    sha = sha256(out / "model.safetensors")

    t0 = time.perf_counter()
    val = [p.text for p in splits["val"][: args.eval_prompts]]
    settings = SamplingSettings(max_new_tokens=MAX_NEW_TOKENS, seed=args.seed)
    groups = sample_scored(model, tok, val, sentiment_reward, k=args.eval_k, settings=settings)
    scores = [s for g in groups for s in g.scores]
    sft = describe(scores)
    finished = sum(f for g in groups for f in g.finished) / len(scores)
    corpus = describe(sentiment_reward(prompts, completions))
    print(f"sampling {len(scores)} completions: {time.perf_counter() - t0:.1f}s")
    for prompt, group in list(zip(val, groups))[:3]:
        print(f"[sampled] {prompt!r} -> {group.texts[0]!r} ({group.scores[0]:+.2f})")
    print("corpus reward:", {k: round(v, 3) for k, v in corpus.items()})
    print("SFT sample reward:", {k: round(v, 3) for k, v in sft.items()}, f"finished {finished:.3f}")

    command = f"python scripts/build_reviews_sft.py --out {args.out} --seed {args.seed}"
    defaults = {"reviews_per_prompt": 4, "steps": 1500, "batch_size": 32, "lr": 2e-3, "hidden": 128, "layers": 6,
                "eval_prompts": 200, "eval_k": 8}  # fmt: skip
    for name, default in defaults.items():
        if getattr(args, name) != default:
            command += f" --{name.replace('_', '-')} {getattr(args, name)}"
    card = MODEL_CARD.format(
        n_params=n_params, hidden=args.hidden, layers=args.layers, heads=4, mlp=3 * args.hidden, max_len=MAX_LENGTH,
        vocab=len(tok), steps=args.steps, lr=args.lr, batch_size=args.batch_size, n_examples=len(examples),
        per_prompt=args.reviews_per_prompt, loss=loss, corpus=corpus, n_eval_prompts=len(val), k_eval=args.eval_k,
        sft=sft, finished=finished, sha=sha, torch_version=torch.__version__,
        tf_version=__import__("transformers").__version__, command=command,
    )  # fmt: skip
    (out / "README.md").write_text(card, encoding="utf-8", newline="\n")
    print(f"model.safetensors sha256: {sha}")
    print(f"total time {time.perf_counter() - started:.1f}s (SFT {train_seconds:.1f}s)")


if __name__ == "__main__":
    main()
