"""lightning_dpo against TRL's DPOTrainer on one GPU: tokens per second, peak memory and MFU.

    python benchmarks/bench_gpu_vs_trl.py [--steps 6] [--warmup 3] [--pairs 8] [--repeats 1] [--json out.json]

The model is shaped like Qwen2.5-0.5B (24 layers, hidden 896, GQA 14/2 heads, vocabulary 151,936, tied
embeddings: 494M parameters) with random weights, in bf16; ``max_length`` 1,024; the multi-turn pairs of
:mod:`bench_vs_trl` (prompts about two thirds of the tokens), the same batches in the same order for every
runner. Each measurement runs in its own process, the runners alternating over ``--repeats`` rounds. The
whole script is sized for well under 5 minutes a round on an H100 (an estimate: not yet run on one).

Runners (AdamW at 1e-6, no gradient checkpointing, dropout off, sdpa attention, frozen reference):

- ``lightning_dpo``: ``DPOModule`` under ``precision="bf16-true"`` with default options (on a GPU with sdpa:
  the fused head at completion positions on the padded batch);
- ``lightning_dpo_packed``: the same with ``logps={padding_free: true, share_prompt: true}`` (one packed row per batch,
  each pair's prompt once, attention one SDPA call per span);
- ``trl``: ``trl.DPOTrainer`` on the same bf16 weights with ``bf16=True``, no gradient checkpointing, no
  precompute, a constant learning rate.

Printed per runner: median step time after ``--warmup`` steps, tokens per second (non-padding tokens of
chosen + rejected rows, the prompt counted in both), peak allocated GPU memory, and MFU: the model FLOPs a
step needs (:func:`step_flops`: policy forward + backward and reference forward on every real token, the
same count for every runner, whatever it skips) over the step time and the GPU's dense bf16 peak.
Numbers are measurements of that run, never assertions.

The device machine has no network: install this package with ``pip install --no-deps -e .`` and carry the
wheels it lacks (trl, datasets, dill, multiprocess, jsonargparse, docstring-parser, typeshed-client, torchdata).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_vs_trl import Shape, _ordered, _step_tokens, build_data, training_order  # noqa: E402

RUNNERS = ("lightning_dpo", "lightning_dpo_packed", "trl")

SHAPE = Shape(24, 896, 4864, 14, 151936, True, 1024, 8, (8, 18), (3, 8))
"""Qwen2.5-0.5B's sizes (``layers``, ``hidden``, ``intermediate``, ``heads``, ``vocab``, ``tied``); 8 pairs
of up to 1,024 tokens; prompts of 8-18 earlier exchanges."""

PEAK_BF16_TFLOPS = {"H100 PCIe": 756.0, "H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0}
"""Dense bf16 peak by device name (substring, first match; the vendors' data sheets, without sparsity)."""


def qwen_config(shape: Shape, tokenizer):
    from bench_common import special_tokens
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=shape.vocab,
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=2,
        max_position_embeddings=32768,
        rope_theta=1000000.0,
        rms_norm_eps=1e-6,
        tie_word_embeddings=shape.tied,
        **special_tokens(tokenizer),
    )


def build_model(path: Path, shape: Shape) -> int:
    """Save a random bf16 Qwen2-shaped model with the bundled tokenizer."""
    import torch
    from bench_common import save_random_model

    return save_random_model(path, lambda tokenizer: qwen_config(shape, tokenizer), dtype=torch.bfloat16)


def step_flops(parameters: int, shape: Shape, rows: list[dict]) -> float:
    """Model FLOPs of one DPO step on ``rows`` (one batch of pairs).

    Per real token: 6N for the policy's forward and backward, 2N for the reference's forward (N: every
    parameter takes part in one multiply-add per token; a tied embedding counts once, as the LM head), plus
    causal attention, 4·layers·hidden·(position + 1) a forward pass per token, times 3 for the policy and 1
    for the reference. Every sequence is counted in full, prompt included, for every runner.
    """
    total = 0.0
    for row in rows:
        for completion in ("chosen_input_ids", "rejected_input_ids"):
            length = len(row["prompt_input_ids"]) + len(row[completion])
            attention = 4 * shape.layers * shape.hidden * length * (length + 1) / 2  # Σ over positions
            total += (6 + 2) * parameters * length + (3 + 1) * attention
    return total


def peak_tflops(device_name: str) -> float | None:
    for key, value in PEAK_BF16_TFLOPS.items():
        if key in device_name:
            return value
    return None


# -- runners (each in its own process) ---------------------------------------------------------------


def _synchronized_clock():
    import torch

    def now() -> float:
        torch.cuda.synchronize()
        return time.perf_counter()

    return now


def run_lightning(model_dir: str, data_dir: str, steps: int, packed: bool) -> dict:
    import torch

    from lightning_dpo import DPOModule, PreferenceDataModule
    from lightning_dpo.namespace import pl

    now, times = _synchronized_clock(), []

    class StepTimer(pl.Callback):
        def on_train_start(self, trainer, pl_module):
            torch.cuda.reset_peak_memory_stats()

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.start = now()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            times.append(now() - self.start)

    options = {"padding_free": True, "share_prompt": True} if packed else {}
    module = DPOModule(
        model_name_or_path=model_dir,
        loss={"beta": 0.1},
        attn_implementation="sdpa",
        logps=options,
        optimizer=lambda p: torch.optim.AdamW(p, lr=1e-6, weight_decay=0.0),
        lr_scheduler=None,
    )
    data = PreferenceDataModule(
        dataset=data_dir,
        tokenizer_name_or_path=model_dir,
        batch_size=SHAPE.pairs,
        max_length=SHAPE.max_length,
        max_prompt_length=None,
    )
    trainer = pl.Trainer(
        accelerator="gpu",
        devices=1,
        precision="bf16-true",
        max_steps=steps,
        limit_val_batches=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[StepTimer()],
        num_sanity_val_steps=0,
    )
    torch.manual_seed(0)
    trainer.fit(module, data)
    return {"times": times, "peak_gpu_bytes": torch.cuda.max_memory_allocated()}


def run_trl(model_dir: str, out_dir: Path, steps: int) -> dict:
    import torch
    from datasets import Dataset
    from torch.utils.data import SequentialSampler
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    rows = _ordered(out_dir)
    dataset = Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows])
    now, times = _synchronized_clock(), []

    class StepTimer(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            torch.cuda.reset_peak_memory_stats()

        def on_step_begin(self, args, state, control, **kwargs):
            self.start = now()

        def on_step_end(self, args, state, control, **kwargs):
            times.append(now() - self.start)

    class SequentialDPOTrainer(DPOTrainer):
        def _get_train_sampler(self, *args, **kwargs):  # the same batches, in the same order
            return SequentialSampler(self.train_dataset)

    args = DPOConfig(
        output_dir=str(out_dir / "trl"),
        per_device_train_batch_size=SHAPE.pairs,
        max_steps=steps,
        learning_rate=1e-6,
        lr_scheduler_type="constant",
        weight_decay=0.0,
        optim="adamw_torch",
        max_grad_norm=0.0,
        beta=0.1,
        max_length=SHAPE.max_length,
        bf16=True,
        gradient_checkpointing=False,
        dataloader_num_workers=0,
        precompute_ref_log_probs=False,
        eval_strategy="no",
        logging_steps=10**6,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=0,
    )
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.bfloat16, attn_implementation="sdpa")
    trainer = SequentialDPOTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        processing_class=AutoTokenizer.from_pretrained(model_dir),
        callbacks=[StepTimer()],
    )
    trainer.train()
    return {"times": times, "peak_gpu_bytes": torch.cuda.max_memory_allocated()}


def child(runner: str, model_dir: str, data_dir: str, out_dir: str, out: str, steps: int) -> None:
    if runner == "trl":
        result = run_trl(model_dir, Path(out_dir), steps)
    else:
        result = run_lightning(model_dir, data_dir, steps, packed=runner == "lightning_dpo_packed")
    Path(out).write_text(json.dumps(result))


# -- the parent --------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runners", nargs="+", default=list(RUNNERS), choices=list(RUNNERS))
    parser.add_argument("--steps", type=int, default=6, help="measured steps per process")
    parser.add_argument("--warmup", type=int, default=3, help="steps before measuring")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved rounds over the runners")
    parser.add_argument("--peak-tflops", type=float, help="the GPU's dense bf16 peak (default: from its name)")
    parser.add_argument("--json", help="also write the summary here")
    parser.add_argument("--_child", nargs=6, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args._child:
        runner, model_dir, data_dir, out_dir, out, steps = args._child
        child(runner, model_dir, data_dir, out_dir, out, int(steps))
        return

    import torch

    if not torch.cuda.is_available():
        sys.exit("bench_gpu_vs_trl.py needs a CUDA GPU; benchmarks/bench_vs_trl.py is the CPU benchmark")
    device = torch.cuda.get_device_name()
    peak = args.peak_tflops or peak_tflops(device)
    total_steps = args.warmup + args.steps
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        env = {
            **os.environ,
            "LIGHTNING_DPO_CACHE": str(tmp / "cache"),
            "HF_HUB_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false",
        }
        os.environ.update(env)
        parameters = build_model(tmp / "model", SHAPE)
        build_data(tmp / "data", SHAPE, SHAPE.pairs * total_steps)
        info = training_order(str(tmp / "model"), str(tmp / "data"), SHAPE, tmp)
        rows = _ordered(tmp)
        flops = [
            step_flops(parameters, SHAPE, rows[s * SHAPE.pairs : (s + 1) * SHAPE.pairs]) for s in range(total_steps)
        ]
        tokens = _step_tokens(rows, SHAPE.pairs, total_steps)
        results: dict[str, list[dict]] = {r: [] for r in args.runners}
        for round_ in range(args.repeats):
            for runner in args.runners:
                out = tmp / f"{runner}-{round_}.json"
                command = [
                    sys.executable,
                    __file__,
                    "--_child",
                    runner,
                    str(tmp / "model"),
                    str(tmp / "data"),
                    str(tmp),
                    str(out),
                    str(total_steps),
                ]
                proc = subprocess.run(command, env=env, capture_output=True, text=True)
                if proc.returncode != 0:
                    print(f"{runner} failed:\n{proc.stderr[-3000:]}", file=sys.stderr)
                    continue
                results[runner].append(json.loads(out.read_text()))
                print(f"  round {round_ + 1}: {runner} done", file=sys.stderr, flush=True)

    print(
        f"\n{device}; Qwen2.5-0.5B-shaped, {parameters / 1e6:.0f}M parameters, bf16; {SHAPE.pairs} pairs a step, "
        f"max_length {SHAPE.max_length}; prompts {info['prompt_share']:.0%} of tokens; median of {args.steps} "
        f"steps after {args.warmup} warm-up, {args.repeats} round(s); peak {peak or '?'} TFLOP/s bf16"
    )
    print(f"  {'runner':<22}{'step s':>9}{'tokens/s':>10}{'peak GiB':>10}{'MFU':>7}{'vs TRL':>8}")
    summary = {}
    for runner, runs in results.items():
        if not runs:
            continue
        measured = [s for r in runs for s in list(zip(r["times"], tokens, flops))[args.warmup :]]
        step = statistics.median(t for t, _, _ in measured)
        summary[runner] = {
            "step_s": step,
            "tokens_per_s": statistics.median(n / t for t, n, _ in measured),
            "mfu": statistics.median(f / t for t, _, f in measured) / (peak * 1e12) if peak else None,
            "peak_gpu_gib": max(r["peak_gpu_bytes"] for r in runs) / 2**30,
        }
    trl = summary.get("trl")
    for runner, r in summary.items():
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "-"
        vs = f"{r['step_s'] / trl['step_s']:.2f}" if trl else "-"
        print(f"  {runner:<22}{r['step_s']:9.3f}{r['tokens_per_s']:10.0f}{r['peak_gpu_gib']:10.2f}{mfu:>7}{vs:>8}")
    print(f"total {time.perf_counter() - started:.0f} s")
    if args.json:
        Path(args.json).write_text(
            json.dumps({"device": device, "parameters": parameters, **info, "runners": summary}, indent=2)
        )


if __name__ == "__main__":
    main()
