"""``reference.dtype: bfloat16`` against the fp32 reference: |Δ logp| per sequence, reference forward time and
the weight bytes saved.

    python benchmarks/bench_reference_dtype.py [--shape qwen] [--workdir /tmp/perf/qwen] [--batches 3] [--tiny-only]

Two models, each on its own data: the bundled tiny SFT model (a trained model: peaked next-token
distributions) on the bundled validation pairs, and a random model at a benchmark shape
(``bench_vs_trl.SHAPES``; Qwen2.5-0.5B's by default) on its multi-turn pairs. Each batch goes through the
frozen reference twice, as DPOModule builds it: in fp32, and stored in bf16 (computed in fp32 on a CPU).
Printed: the sequences' |logp| (summed over completion tokens), |Δ logp| max and mean, its relative size,
|Δ reward| = β·|Δ logp| at β = 0.1, and the best reference-forward time of each.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def compare(model_dir: str, batches: list, label: str) -> dict:
    import torch

    from lightning_dpo import DPOModule

    results = {}
    for dtype in (None, "bfloat16"):
        module = DPOModule(model_name_or_path=model_dir, reference={"dtype": dtype})
        module.configure_model()
        logps, times = [], []
        for batch in batches:
            start = time.perf_counter()
            logps.append(module.reference.logps(batch, module.logps_options).logps)
            times.append(time.perf_counter() - start)
        results[dtype] = (torch.cat(logps), min(times[1:] or times), module.reference.bytes_saved)
        del module
    (a, ta, _), (b, tb, saved) = results[None], results["bfloat16"]
    delta = (a - b).abs()
    row = {
        "model": label,
        "sequences": a.numel(),
        "abs_logp_min": float(a.abs().min()),
        "abs_logp_max": float(a.abs().max()),
        "delta_max": float(delta.max()),
        "delta_mean": float(delta.mean()),
        "relative_max": float((delta / a.abs()).max()),
        "reward_delta_max_beta_0.1": 0.1 * float(delta.max()),
        "fp32_forward_s": ta,
        "bf16_forward_s": tb,
        "bytes_saved": saved,
    }
    print(
        f"{label}: {row['sequences']} sequences, |logp| {row['abs_logp_min']:.1f}..{row['abs_logp_max']:.1f} nats; "
        f"|Δ logp| max {row['delta_max']:.4f}, mean {row['delta_mean']:.4f} (relative max {row['relative_max']:.1e}); "
        f"|Δ reward| at β = 0.1 up to {row['reward_delta_max_beta_0.1']:.5f}; reference forward fp32 {ta:.2f} s, "
        f"bf16-stored {tb:.2f} s; {saved / 2**30:.2f} GiB of weights saved",
        flush=True,
    )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="qwen")
    parser.add_argument("--workdir", default="/tmp/perf/qwen")
    parser.add_argument("--batches", type=int, default=3)
    parser.add_argument("--tiny-only", action="store_true", help="only the bundled tiny SFT model (seconds)")
    parser.add_argument("--json")
    args = parser.parse_args()
    os.environ.setdefault("LIGHTNING_DPO_CACHE", str(Path(args.workdir) / "cache"))
    os.environ.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    import json

    import bench_vs_trl as bench
    from profile_step import prepare

    from lightning_dpo import PreferenceDataModule
    from lightning_dpo.embedded import DEFAULT_DATASET, DEFAULT_MODEL

    rows = []
    tiny = PreferenceDataModule(dataset=DEFAULT_DATASET, tokenizer_name_or_path=DEFAULT_MODEL, batch_size=16)
    tiny.setup("fit")
    loader = iter(tiny.val_dataloader())
    rows.append(compare(DEFAULT_MODEL, [next(loader) for _ in range(args.batches)], "tiny SFT (trained), val pairs"))

    workdir = Path(args.workdir)
    if args.tiny_only:
        if args.json:
            Path(args.json).write_text(json.dumps(rows, indent=1))
        return
    prepare(workdir, args.shape, max(args.batches, 8))
    shape = bench.SHAPES[args.shape]
    data = bench.datamodule(str(workdir / "model"), str(workdir / "data"), shape)
    data.setup("fit")
    loader = iter(data.train_dataloader())
    batches = [next(loader) for _ in range(args.batches)]
    rows.append(compare(str(workdir / "model"), batches, f"{args.shape} shape (random weights)"))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
