"""Peak memory, step time and checkpoint size of each reference mode, side by side.

    python benchmarks/bench_reference_modes.py [--steps 10] [--pairs 4] [--max-length 256] [--repeats 1]

One random Llama (8 layers, hidden 512, vocab 32k, untied embeddings: about 58M parameters) is saved once;
then each mode trains it with AdamW in its own process (so peak RSS is that mode's alone), the modes
interleaved A B C A B C … when --repeats > 1, with glibc's mmap threshold fixed (see below;
``--default-malloc`` leaves it dynamic). Printed: the median step time (after two warm-up steps),
peak RSS of training (read before the checkpoint is written), the memory each mode saves against ``frozen`` as a
multiple of the reference model's size,
and the checkpoint size against policy + optimizer state. Figures are measurements of this run, never
assertions: these machines are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODES = ("frozen", "precomputed", "adapter")


def build_data(path: Path, pairs: int, turns: int = 6) -> None:
    """Multi-turn dialogues from the bundled pairs: each prompt holds ``turns`` earlier exchanges
    (about 200 tokens), so that a step's work is the model's, not the optimizer's fixed cost."""
    import json

    from lightning_dpo.embedded import DEFAULT_DATASET, resolve_dataset

    source = Path(resolve_dataset(DEFAULT_DATASET)) / "train.jsonl"
    rows = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines()]
    path.mkdir()
    for split, start, n in (("train", 0, pairs), ("val", pairs, 8)):
        with open(path / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for i in range(start, start + n):
                history = "".join(r["prompt"] + r["chosen"] for r in rows[i + 1 : i + 1 + turns])
                row = rows[i]
                f.write(
                    json.dumps(
                        {"prompt": history + row["prompt"], "chosen": row["chosen"], "rejected": row["rejected"]}
                    )
                    + "\n"
                )


def build_model(path: Path) -> int:
    from bench_common import save_random_model, special_tokens
    from transformers import LlamaConfig

    return save_random_model(
        path,
        lambda tokenizer: LlamaConfig(
            vocab_size=32000,
            hidden_size=512,
            intermediate_size=1376,
            num_hidden_layers=8,
            num_attention_heads=8,
            num_key_value_heads=8,
            max_position_embeddings=1024,
            tie_word_embeddings=False,
            **special_tokens(tokenizer),
        ),
    )


def run_mode(mode: str, model_dir: str, data_dir: str, out: str, steps: int, pairs: int, max_length: int) -> None:
    """Child process: train ``steps`` steps in one mode, write the measurements as JSON."""
    import torch
    from bench_common import step_timer

    from lightning_dpo import DPOModule, PreferenceDataModule
    from lightning_dpo.namespace import pl

    torch.manual_seed(0)
    times: list[float] = []
    tokens: list[int] = []

    lora = {"r": 16, "lora_alpha": 32, "target_modules": "all-linear"} if mode == "adapter" else None
    module = DPOModule(
        model_name_or_path=model_dir,
        lora=lora,
        reference={"mode": mode, "cache_dir": os.path.join(out + ".cache"), "precompute_batch_size": pairs},
        # fused: torch's fastest CPU AdamW. The optimizer step is the same in every mode, so a slow one only
        # dilutes the differences being measured (the for-loop AdamW took 0.23 s of a 1.5 s frozen step here).
        optimizer=lambda p: torch.optim.AdamW(p, lr=1e-5, fused=True),
        lr_scheduler=None,
    )
    data = PreferenceDataModule(
        dataset=data_dir,
        tokenizer_name_or_path=model_dir,
        batch_size=pairs,
        max_length=max_length,
        max_prompt_length=max_length // 2,
    )
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=steps,
        limit_train_batches=steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[step_timer(times, tokens)],
    )
    started = time.perf_counter()
    trainer.fit(module, data)
    fit_seconds = time.perf_counter() - started
    # Peak RSS of training, read before saving: Lightning's checkpoint writer buffers the whole file in
    # memory (twice), which would otherwise set every mode's peak.
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    checkpoint = out + ".ckpt"
    trainer.save_checkpoint(checkpoint)
    trainable = sum(p.numel() * p.element_size() for p in module.policy.parameters() if p.requires_grad)
    optimizer_state = sum(
        t.numel() * t.element_size()
        for state in trainer.optimizers[0].state.values()
        for t in state.values()
        if torch.is_tensor(t)
    )
    result = {
        "mode": mode,
        "step_seconds": statistics.median(times[2:] or times),
        "fit_seconds": fit_seconds,
        "peak_rss_bytes": peak,
        "checkpoint_bytes": os.path.getsize(checkpoint),
        "policy_plus_optimizer_bytes": trainable + optimizer_state,
        "tokens_per_step": statistics.mean(tokens),
    }
    Path(out).write_text(json.dumps(result))
    os.remove(checkpoint)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--pairs", type=int, default=4, help="preference pairs per step")
    parser.add_argument("--train-pairs", type=int, default=64, help="pairs in the data (precomputed covers them all)")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=1, help="interleaved rounds over the modes")
    parser.add_argument("--modes", nargs="+", default=list(MODES))
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="leave glibc's mmap threshold dynamic: step times as users see them, noisier peak RSS",
    )
    parser.add_argument("--_child", nargs=2, metavar=("MODE", "OUT"), help=argparse.SUPPRESS)
    parser.add_argument("--_model", help=argparse.SUPPRESS)
    parser.add_argument("--_data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        run_mode(args._child[0], args._model, args._data, args._child[1], args.steps, args.pairs, args.max_length)
        return

    with tempfile.TemporaryDirectory() as tmp:
        model_dir = Path(tmp) / "model"
        n_params = build_model(model_dir)
        build_data(Path(tmp) / "data", args.train_pairs)
        model_bytes = n_params * 4
        results: dict[str, list[dict]] = {m: [] for m in args.modes}
        # A fixed mmap threshold makes glibc return every large freed block to the OS at once, so peak RSS
        # measures live memory rather than how the allocator's heap happened to fragment.
        # It also makes every large allocation map fresh pages, which slows every step (--default-malloc).
        env = {**os.environ, **({} if args.default_malloc else {"MALLOC_MMAP_THRESHOLD_": "131072"})}
        for round_ in range(args.repeats):
            for mode in args.modes:
                out = str(Path(tmp) / f"{mode}-{round_}.json")
                command = [
                    sys.executable,
                    __file__,
                    "--_child",
                    mode,
                    out,
                    "--_model",
                    str(model_dir),
                    "--_data",
                    str(Path(tmp) / "data"),
                    "--steps",
                    str(args.steps),
                    "--pairs",
                    str(args.pairs),
                    "--max-length",
                    str(args.max_length),
                ]
                subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
                results[mode].append(json.loads(Path(out).read_text()))

    tokens = statistics.mean(r["tokens_per_step"] for rs in results.values() for r in rs)
    print(
        f"model: {n_params / 1e6:.1f}M parameters, {model_bytes / 2**20:.0f} MiB in fp32; {args.pairs} pairs, "
        f"{tokens:.0f} tokens per step (max_length {args.max_length}); {args.steps} steps; median over "
        f"{args.repeats} round(s)"
    )
    med = {m: {k: statistics.median(r[k] for r in rs) for k in rs[0] if k != "mode"} for m, rs in results.items()}
    base = med.get("frozen")
    print(
        f"{'mode':<12} {'step s':>8} {'vs frozen':>9} {'peak RSS MiB':>13} {'saved vs frozen':>16} "
        f"{'checkpoint MiB':>15} {'ckpt / (policy+opt)':>20}"
    )
    for mode, m in med.items():
        saved = (base["peak_rss_bytes"] - m["peak_rss_bytes"]) / model_bytes if base else float("nan")
        ratio = m["step_seconds"] / base["step_seconds"] if base else float("nan")
        print(
            f"{mode:<12} {m['step_seconds']:8.2f} {ratio:9.2f} {m['peak_rss_bytes'] / 2**20:13.0f} "
            f"{saved:13.2f} x M {m['checkpoint_bytes'] / 2**20:15.1f} "
            f"{m['checkpoint_bytes'] / m['policy_plus_optimizer_bytes']:20.3f}"
        )
    print("saved vs frozen: (peak RSS of frozen − peak RSS of the mode) / the model's fp32 size M")


if __name__ == "__main__":
    main()
