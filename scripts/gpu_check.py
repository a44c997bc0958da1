"""The GPU check of scale-out and precision: peak memory and step time on one GPU, in under 5 minutes.

    python scripts/gpu_check.py [--steps 12] [--pairs 8] [--max-length 512] [--output gpu_check.json]

A randomly initialised model shaped like Qwen2.5-0.5B (24 layers, hidden 896, GQA 14/2 heads, vocabulary
151,936, tied embeddings: 494M parameters) is saved once; no network. Each run then trains DPO (frozen
reference, AdamW) for ``--steps`` steps of ``--pairs`` pairs of ``--max-length`` tokens, in a process of its
own so that its peak memory is its alone:

- ``bf16-mixed``: the baseline; fp32 weights, bf16 autocast.
- ``bf16-true+ckpt``: bf16 weights, gradient checkpointing of the policy.
- ``fsdp2+bf16-true+ckpt``: the same through ModelParallelStrategy + fully_shard (FSDP2) on the one GPU.
- ``fsdp1+bf16-mixed+ckpt``: FSDPStrategy (FSDP1) with DPOAutoWrapPolicy.

Printed: the median step time after two warm-up steps, peak allocated and reserved GPU memory, and the final
loss (a finite number, and below ln 2). Figures are measurements of one run on one machine, never assertions.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNS = {
    "bf16-mixed": {"precision": "bf16-mixed", "strategy": "auto", "gradient_checkpointing": False},
    "bf16-true+ckpt": {"precision": "bf16-true", "strategy": "auto", "gradient_checkpointing": True},
    "fsdp2+bf16-true+ckpt": {"precision": "bf16-true", "strategy": "fsdp2", "gradient_checkpointing": True},
    "fsdp1+bf16-mixed+ckpt": {"precision": "bf16-mixed", "strategy": "fsdp1", "gradient_checkpointing": True},
}


def qwen25_05b_config(vocab_size: int = 151936):
    """A ``Qwen2Config`` with Qwen2.5-0.5B's shapes (its config.json), random weights to come."""
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=896,
        intermediate_size=4864,
        num_hidden_layers=24,
        num_attention_heads=14,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=True,
        attention_dropout=0.0,
    )


def parameter_count(config) -> int:
    """Parameters of a model built from ``config``, counted on the meta device (no memory)."""
    import torch
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(p.numel() for p in model.parameters())


def build(root: Path, pairs: int, max_length: int) -> tuple[Path, Path]:
    """Save the random model (with the bundled tokenizer, whose 1k ids are in the vocabulary) and long pairs."""
    import torch
    from transformers import AutoModelForCausalLM

    from lightning_dpo.embedded import DEFAULT_DATASET, DEFAULT_MODEL, resolve_dataset
    from lightning_dpo.models import load_tokenizer

    tokenizer = load_tokenizer(DEFAULT_MODEL)
    config = qwen25_05b_config()
    config.bos_token_id, config.eos_token_id, config.pad_token_id = (
        tokenizer.bos_token_id,
        tokenizer.eos_token_id,
        tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model_dir, data_dir = root / "model", root / "data"
    model.save_pretrained(model_dir)
    tokenizer.save_pretrained(model_dir)
    source = Path(resolve_dataset(DEFAULT_DATASET)) / "train.jsonl"
    rows = [json.loads(line) for line in source.read_text(encoding="utf-8").splitlines()]
    data_dir.mkdir()
    # Multi-turn prompts of earlier exchanges, so that pairs fill about max_length tokens.
    per_exchange = 40
    turns = max(1, max_length // per_exchange - 2)
    for split, start, n in (("train", 0, pairs * 16), ("val", pairs * 16, pairs)):
        with open(data_dir / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for i in range(start, start + n):
                history = "".join(r["prompt"] + r["chosen"] for r in rows[i + 1 : i + 1 + turns])
                row = rows[i]
                f.write(
                    json.dumps(
                        {"prompt": history + row["prompt"], "chosen": row["chosen"], "rejected": row["rejected"]}
                    )
                    + "\n"
                )
    return model_dir, data_dir


def run_one(name: str, model_dir: str, data_dir: str, steps: int, pairs: int, max_length: int) -> dict:
    """One run in this process (``--run NAME``): fit ``steps`` steps, time them, read the peak memory."""
    import pytorch_lightning as pl
    import torch
    from pytorch_lightning.strategies import FSDPStrategy, ModelParallelStrategy

    from lightning_dpo import DPOModule, PreferenceDataModule
    from lightning_dpo.sharding import DPOAutoWrapPolicy

    spec = RUNS[name]
    strategy = {
        "auto": "auto",
        "fsdp2": ModelParallelStrategy(data_parallel_size=1, tensor_parallel_size=1),
        "fsdp1": FSDPStrategy(auto_wrap_policy=DPOAutoWrapPolicy()),
    }[spec["strategy"]]

    class Clock(pl.Callback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.losses: list[float] = []

        def on_train_start(self, trainer, pl_module):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            torch.cuda.synchronize()
            self.start = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self.start)
            self.losses.append(outputs["loss"].item())

    clock = Clock()
    module = DPOModule(
        model_name_or_path=model_dir,
        loss={"beta": 0.1},
        gradient_checkpointing=spec["gradient_checkpointing"],
        optimizer=lambda p: torch.optim.AdamW(p, lr=1e-5),
        lr_scheduler=None,
    )
    data = PreferenceDataModule(
        dataset=data_dir, batch_size=pairs, max_length=max_length, max_prompt_length=max_length - 64
    )
    trainer = pl.Trainer(
        accelerator="gpu",
        devices=1,
        strategy=strategy,
        precision=spec["precision"],
        max_steps=steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[clock],
    )
    trainer.fit(module, data)
    return {
        "run": name,
        "median_step_s": statistics.median(clock.times[2:] or clock.times),
        "peak_allocated_gib": torch.cuda.max_memory_allocated() / 2**30,
        "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2**30,
        "first_loss": clock.losses[0],
        "last_loss": clock.losses[-1],
        "weights": str({p.dtype for p in module.policy.parameters()}),
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps per run (2 are warm-up)")
    parser.add_argument("--pairs", type=int, default=8, help="preference pairs per step")
    parser.add_argument("--max-length", type=int, default=512, help="tokens per sequence, at most")
    parser.add_argument("--runs", nargs="+", default=list(RUNS), choices=list(RUNS), help="which runs, in order")
    parser.add_argument("--output", type=Path, help="also write the results as JSON here")
    parser.add_argument("--run", help=argparse.SUPPRESS)  # internal: one run in this process
    parser.add_argument("--dirs", nargs=2, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("gpu_check.py needs a CUDA GPU (none is visible); the CPU tests cover the rest", file=sys.stderr)
        return 2
    if args.run:
        result = run_one(args.run, *args.dirs, args.steps, args.pairs, args.max_length)
        print("RESULT " + json.dumps(result))
        return 0
    started = time.perf_counter()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        model_dir, data_dir = build(Path(tmp), args.pairs, args.max_length)
        print(
            f"model: Qwen2.5-0.5B-shaped, {parameter_count(qwen25_05b_config()) / 1e6:.1f}M parameters; "
            f"{args.steps} steps of {args.pairs} pairs, max_length {args.max_length}; {torch.cuda.get_device_name()}"
        )
        for name in args.runs:
            command = [
                sys.executable,
                __file__,
                "--run",
                name,
                "--dirs",
                str(model_dir),
                str(data_dir),
                "--steps",
                str(args.steps),
                "--pairs",
                str(args.pairs),
                "--max-length",
                str(args.max_length),
            ]
            out = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
            lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
            if out.returncode != 0 or not lines:
                results.append({"run": name, "error": out.stderr[-1500:]})
                print(f"{name}: FAILED\n{out.stderr[-1500:]}", file=sys.stderr)
                continue
            results.append(json.loads(lines[-1][len("RESULT ") :]))
    print("\n| run | median step | peak allocated | peak reserved | loss first -> last | weights |")
    print("|---|---|---|---|---|---|")
    for r in results:
        if "error" in r:
            print(f"| {r['run']} | failed | | | | |")
            continue
        ok = math.isfinite(r["last_loss"]) and r["last_loss"] < math.log(2)
        print(
            f"| {r['run']} | {r['median_step_s']:.3f} s | {r['peak_allocated_gib']:.2f} GiB | "
            f"{r['peak_reserved_gib']:.2f} GiB | {r['first_loss']:.4f} -> {r['last_loss']:.4f}"
            f"{'' if ok else ' (!)'} | "
            f"{r['weights']} |"
        )
    print(f"\ntotal {time.perf_counter() - started:.0f} s")
    if args.output:
        args.output.write_text(json.dumps(results, indent=1))
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
