"""``lightning_dpo.plan``'s predicted peak memory against the peak RSS measured by the benchmarks.

    python benchmarks/validate_plan.py RUN.json [RUN.json ...] [--json out.json]

Each RUN.json is a ``bench_vs_trl.py --json`` summary (every ``lightning_dpo`` runner of every shape, memory
options included; the shape's config is rebuilt from the summary) or a ``profile_step.py --json`` report (its
model's ``config.json`` is read from the path the report records). The prediction is for the largest batch
the run trained on (tokens through the model with each pair's prompt once, and scored positions); the
measurement is the process's peak RSS (``ru_maxrss`` in bench_vs_trl, VmHWM over the steps in profile_step).
The optimizer is what the benchmarks use: torch's AdamW, its CPU default (for-loop) step, or the one named
in the profile report. Prints the error of each and the predicted parts by cause.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lightning_dpo.plan import MemoryPlan, MemorySettings, ModelDims, peak_memory

GiB = 2**30

OPTION_SETTINGS = {
    "": {},
    "in_backward": {"optimizer_in_backward": True},
    "bf16_reference": {"reference_dtype": "bfloat16"},
    "checkpointing": {"checkpointing": True},
    "jemalloc": {},
}
"""bench_vs_trl's ``lightning_dpo+NAME`` runners as plan settings (jemalloc: the same plan, another allocator)."""


def shape_config(shape: dict) -> dict:
    """A bench_vs_trl ``Shape`` (as its summary stores it) as a ``config.json`` dict."""
    return {
        "num_hidden_layers": shape["layers"],
        "hidden_size": shape["hidden"],
        "intermediate_size": shape["intermediate"],
        "num_attention_heads": shape["heads"],
        "num_key_value_heads": shape.get("kv_heads") or shape["heads"],
        "vocab_size": shape["vocab"],
        "tie_word_embeddings": shape["tied"],
        "model_type": shape.get("arch", "llama"),
    }


def predict(config: dict, batches: list[list[list[int]]], **settings) -> MemoryPlan:
    """The plan for the run's largest batch; ``batches``: per step, each pair's (prompt, chosen, rejected)."""
    dims = ModelDims.from_config(config)
    tokens = max(sum(p + c + r for p, c, r in b) for b in batches)
    scored = max(sum(c + r for _, c, r in b) for b in batches)
    return peak_memory(dims, MemorySettings(tokens=tokens, scored=scored, **settings))


def bench_rows(name: str, summary: dict) -> list[dict]:
    """One row per ``lightning_dpo`` runner and shape of a bench_vs_trl summary."""
    rows = []
    for shape_name, shape in summary.items():
        pairs = shape["shape"]["pairs"]
        lengths = shape["pair_lengths"]
        batches = [lengths[i : i + pairs] for i in range(0, len(lengths), pairs)]
        for runner, result in shape["runners"].items():
            base, _, option = runner.partition("+")
            if base != "lightning_dpo" or option not in OPTION_SETTINGS:
                continue  # TRL, the plain step and the padded layout are not what the plan models
            settings = {"optimizer": "adamw", "optimizer_impl": "for-loop", **OPTION_SETTINGS[option]}
            plan = predict(shape_config(shape["shape"]), batches, **settings)
            rows.append(row(f"{name}:{shape_name}:{runner}", plan, result["peak_rss_mib"] * 2**20))
    return rows


def profile_rows(name: str, report: dict) -> list[dict]:
    """The row of a profile_step report."""
    config = json.loads(Path(report["model_config"]).read_text())
    optimizer = report["optimizer"]
    kwargs = report.get("module_kwargs", {})
    settings = {
        "optimizer": "adamw" if optimizer.startswith("adamw") else "rmsprop",
        "optimizer_impl": {"adamw": "for-loop", "adamw_foreach": "foreach", "adamw_fused": "fused"}.get(
            optimizer.removesuffix("_inbwd"), None
        ),
        "optimizer_in_backward": optimizer.endswith("_inbwd"),
        "checkpointing": bool(kwargs.get("gradient_checkpointing")),
        "reference_dtype": (kwargs.get("reference") or {}).get("dtype"),
    }
    plan = predict(config, [s["pairs"] for s in report["steps"]], **settings)
    return [row(name, plan, report["step_peak_rss"])]


def row(name: str, plan: MemoryPlan, measured: float) -> dict:
    return {
        "run": name,
        "predicted_bytes": plan.total,
        "measured_bytes": measured,
        "error": plan.total / measured - 1,
        "moment": plan.moment,
        "parts": plan.parts,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", help="bench_vs_trl.py or profile_step.py JSON")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    rows = []
    for path in args.runs:
        data = json.loads(Path(path).read_text())
        rows += profile_rows(Path(path).stem, data) if "median" in data else bench_rows(Path(path).stem, data)
    print(f"{'run':<52}{'predicted GiB':>14}{'measured GiB':>14}{'error':>8}   predicted by cause (GiB), moment")
    for r in rows:
        causes = ", ".join(f"{k} {v / GiB:.2f}" for k, v in r["parts"].items())
        print(
            f"{r['run']:<52}{r['predicted_bytes'] / GiB:14.2f}{r['measured_bytes'] / GiB:14.2f}{r['error']:8.0%}"
            f"   {causes}; at {r['moment']}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
