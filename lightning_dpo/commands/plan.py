"""``lightning-dpo plan``: will it fit? Peak memory per device and FLOPs per step, before renting GPUs.

    lightning-dpo plan --model MODEL [--config FIT.yaml] [--data-report REPORT.json] [--batch-size 8]
        [--precision bf16-mixed] [--strategy fsdp] [--devices 8] [--accelerator gpu] [--reference frozen]
        [--reference-dtype bfloat16] [--lora-r 16] [--checkpointing] [--optimizer adamw] [--memory-gib 80]

``--model`` is a ``config.json``, a folder that holds one, ``embedded:<name>`` or a Hugging Face id (only its
``config.json`` is read: no weights). ``--config`` reads a ``lightning-dpo fit`` config for everything it sets
(model, LoRA, reference mode and dtype, checkpointing, optimizer, batch size, lengths, precision, strategy,
devices); flags override it. Lengths come from ``--data-report`` (``lightning-dpo data --report FILE``:
prompt and completion percentiles, clipped to ``max_length`` / ``max_prompt_length`` as truncation clips
them), from ``--prompt-tokens`` / ``--completion-tokens``, or else the worst case the length limits allow.

The peak is for the worst micro-batch (every pair at the ``--lengths`` percentile, ``max`` by default); the
FLOPs for a typical one (p50). The model behind it is :mod:`lightning_dpo.plan`, validated against measured
peak RSS on a CPU (docs/performance.md); GPU-side constants (CUDA context, NCCL buffers, the caching
allocator's fragmentation) are estimates.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

from lightning_dpo.plan import (
    PRECISIONS,
    STRATEGIES,
    GiB,
    MemorySettings,
    ModelDims,
    lora_params,
    peak_memory,
    step_flops,
)

LENGTH_KEYS = ("p50", "p90", "p95", "p99", "max")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="lightning-dpo plan", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", help="config.json, a folder with one, embedded:<name> or a Hub id")
    p.add_argument("--config", help="a lightning-dpo fit config to read the settings from")
    p.add_argument("--data-report", help="JSON from `lightning-dpo data --report FILE`")
    p.add_argument("--lengths", choices=LENGTH_KEYS, default="max", help="percentile the peak is planned at")
    p.add_argument("--prompt-tokens", type=int, help="prompt length (instead of a data report)")
    p.add_argument("--completion-tokens", type=int, help="completion length (instead of a data report)")
    p.add_argument("--max-length", type=int)
    p.add_argument("--max-prompt-length", type=int)
    p.add_argument("--batch-size", type=int, help="pairs per device per micro-batch")
    p.add_argument("--precision", choices=sorted(PRECISIONS))
    p.add_argument("--strategy", choices=STRATEGIES)
    p.add_argument("--devices", type=int)
    p.add_argument("--accelerator", choices=("cpu", "gpu"))
    p.add_argument("--reference", choices=("frozen", "adapter", "precomputed", "none"))
    p.add_argument("--reference-dtype", choices=("bfloat16", "float16", "float32"))
    p.add_argument("--lora-r", type=int, help="LoRA rank (all linear layers unless --lora-targets)")
    p.add_argument("--lora-targets", nargs="+")
    p.add_argument("--checkpointing", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--optimizer", choices=("rmsprop", "adamw", "sgd"))
    p.add_argument("--optimizer-impl", choices=("for-loop", "foreach", "fused", "blocked"))
    p.add_argument("--optimizer-in-backward", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--layout", choices=("auto", "shared", "packed", "padded"), default="auto")
    p.add_argument("--memory-gib", type=float, help="memory per device; default 80 on a GPU")
    p.add_argument("--json", help="also write the plan here")
    return p


def main(argv: list[str]) -> int:
    args = parser().parse_args(argv)
    settings = {**_defaults(), **(_from_fit_config(args.config) if args.config else {}), **_from_flags(args)}
    if not settings.get("model"):
        raise SystemExit("lightning-dpo plan: give --model (or a --config that names model.model_name_or_path)")
    dims = ModelDims.from_config(read_model_config(settings["model"]))
    report = json.loads(Path(args.data_report).read_text(encoding="utf-8")) if args.data_report else None
    plan = make_plan(dims, settings, report, args.lengths)
    print(format_plan(plan))
    if args.json:
        Path(args.json).write_text(json.dumps(plan, indent=1, default=str), encoding="utf-8")
    return 0


def _defaults() -> dict[str, Any]:
    return {
        "batch_size": 8,
        "precision": "32-true",
        "strategy": "single",
        "devices": 1,
        "accelerator": "cpu",
        "reference": "frozen",
        "reference_dtype": None,
        "lora_r": None,
        "lora_targets": "all-linear",
        "checkpointing": False,
        "optimizer": "rmsprop",
        "optimizer_impl": None,
        "optimizer_in_backward": False,
        "max_length": 512,
        "max_prompt_length": None,
        "layout": "auto",
    }


def _from_flags(args: argparse.Namespace) -> dict[str, Any]:
    names = [
        "model",
        "batch_size",
        "precision",
        "strategy",
        "devices",
        "accelerator",
        "reference",
        "reference_dtype",
        "lora_r",
        "lora_targets",
        "checkpointing",
        "optimizer",
        "optimizer_impl",
        "optimizer_in_backward",
        "max_length",
        "max_prompt_length",
        "prompt_tokens",
        "completion_tokens",
        "memory_gib",
    ]
    out = {name: getattr(args, name) for name in names if getattr(args, name) is not None}
    if args.layout != "auto":
        out["layout"] = args.layout
    return out


def _from_fit_config(path: str) -> dict[str, Any]:
    """The plan's settings from a ``lightning-dpo fit`` YAML (only what it sets)."""
    config = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    model, data, trainer = (config.get(k) or {} for k in ("model", "data", "trainer"))
    out: dict[str, Any] = {}
    if "model_name_or_path" in model:
        out["model"] = model["model_name_or_path"]
    reference = model.get("reference") or {}
    if reference.get("mode") not in (None, "auto"):
        out["reference"] = reference["mode"]
    if reference.get("dtype"):
        out["reference_dtype"] = reference["dtype"]
    if model.get("lora"):
        out["lora_r"] = int(model["lora"].get("r", 8))
        targets = model["lora"].get("target_modules", "all-linear")
        out["lora_targets"] = targets
        out.setdefault("reference", "adapter")
    for key, name in (("gradient_checkpointing", "checkpointing"), ("optimizer_in_backward", "optimizer_in_backward")):
        if key in model:
            out[name] = bool(model[key])
    optimizer = model.get("optimizer")
    optimizer_path = optimizer.get("class_path", "") if isinstance(optimizer, dict) else str(optimizer or "")
    for fragment, name in (("adam", "adamw"), ("rmsprop", "rmsprop"), ("sgd", "sgd")):
        if fragment in optimizer_path.lower():
            out["optimizer"] = name
    for key in ("batch_size", "max_length", "max_prompt_length"):
        if data.get(key) is not None:
            out[key] = data[key]
    if trainer.get("precision") is not None:
        out["precision"] = str(trainer["precision"])
    if isinstance(trainer.get("devices"), int):
        out["devices"] = trainer["devices"]
    if trainer.get("accelerator") in ("cpu", "gpu", "cuda"):
        out["accelerator"] = "gpu" if trainer["accelerator"] == "cuda" else trainer["accelerator"]
    strategy = trainer.get("strategy")
    strategy = strategy.get("class_path", "") if isinstance(strategy, dict) else str(strategy or "")
    name = _strategy(strategy.lower())
    if name:
        out["strategy"] = name
    return out


def _strategy(text: str) -> str | None:
    """A Lightning strategy name or class path -> the plan's strategy (``None``: not one it distinguishes)."""
    if "stage_3" in text or "stage3" in text:
        return "deepspeed_stage_3"
    if "deepspeed" in text:
        return "deepspeed_stage_2"
    if "fsdp" in text or "modelparallel" in text:
        return "fsdp"
    if "ddp" in text:
        return "ddp"
    return None


def read_model_config(model: str) -> dict[str, Any]:
    """A model's ``config.json`` as a dict, without its weights."""
    from lightning_dpo.embedded import is_embedded, resolve_model

    if is_embedded(model):
        model = resolve_model(model)
    path = Path(model)
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    if (path / "config.json").is_file():
        return json.loads((path / "config.json").read_text(encoding="utf-8"))
    try:
        from transformers import AutoConfig

        return AutoConfig.from_pretrained(model).to_dict()  # config.json only: from the Hub or its cache
    except (OSError, ValueError) as e:
        raise SystemExit(
            f"lightning-dpo plan: cannot read the config of {model!r} ({e}); give a local config.json, or run "
            "online once so that the Hub's config.json is cached"
        ) from e


def _lengths(settings: dict[str, Any], report: dict[str, Any] | None, key: str) -> tuple[int, int, str]:
    """(prompt, completion) tokens at percentile ``key``, clipped as truncation clips them, and their source."""
    max_length, max_prompt = settings["max_length"], settings.get("max_prompt_length")
    if "prompt_tokens" in settings or "completion_tokens" in settings:
        prompt = settings.get("prompt_tokens", max_prompt or max_length // 2)
        completion = settings.get("completion_tokens", max_length - prompt)
        source = "given"
    elif report is not None:
        lengths = (report.get("train") or next(iter(report.values())))["lengths"]
        prompt, completion = lengths["prompt"][key], lengths["completion"][key]
        source = f"data report, {key}"
    else:
        prompt = max_prompt or max_length // 2
        completion = max_length - prompt
        source = "the length limits' worst case"
    prompt = min(prompt, max_prompt) if max_prompt else prompt
    prompt = min(prompt, max_length - 1)
    return prompt, max(1, min(completion, max_length - prompt)), source


def _layout(settings: dict[str, Any]) -> str:
    """How the batch runs: ``shared`` (packed, each prompt once), ``packed`` or ``padded`` (the defaults of
    ``model.logps``: packed with shared prompts on a CPU with sdpa, padded on a GPU with sdpa)."""
    if settings["layout"] != "auto":
        return settings["layout"]
    return "shared" if settings["accelerator"] == "cpu" else "padded"


def _tokens(layout: str, pairs: int, prompt: int, completion: int) -> int:
    if layout == "shared":
        return pairs * (prompt + 2 * completion)
    return 2 * pairs * (prompt + completion)  # packed: both rows whole; padded: every row at the longest


def make_plan(dims: ModelDims, settings: dict[str, Any], report: dict[str, Any] | None, key: str) -> dict[str, Any]:
    """The plan as a dict: settings, lengths, memory by cause at the peak, FLOPs per step."""
    lora = lora_params(dims, settings["lora_r"], settings["lora_targets"]) if settings.get("lora_r") else 0
    layout = _layout(settings)
    pairs = settings["batch_size"]
    prompt, completion, source = _lengths(settings, report, key)
    memory = peak_memory(
        dims,
        MemorySettings(
            tokens=_tokens(layout, pairs, prompt, completion),
            scored=2 * pairs * completion,
            precision=settings["precision"],
            accelerator=settings["accelerator"],
            reference=settings["reference"],
            reference_dtype=settings["reference_dtype"],
            optimizer=settings["optimizer"],
            optimizer_impl=settings["optimizer_impl"],
            optimizer_in_backward=settings["optimizer_in_backward"],
            lora_params=lora,
            checkpointing=settings["checkpointing"],
            strategy=settings["strategy"],
            devices=settings["devices"],
        ),
    )
    typical = _lengths(settings, report, "p50") if report is not None else (prompt, completion, source)
    flops = step_flops(
        dims,
        [(typical[0], typical[1], typical[1])] * pairs,
        reference=settings["reference"] in ("frozen", "adapter"),
        trainable_base=not lora,
        checkpointing=settings["checkpointing"],
    )
    budget = settings.get("memory_gib", 80.0 if settings["accelerator"] == "gpu" else None)
    return {
        "model": settings["model"],
        "parameters": dims.params,
        "lora_parameters": lora,
        "settings": {k: v for k, v in settings.items() if k != "model"},
        "layout": layout,
        "lengths": {"prompt": prompt, "completion": completion, "source": source, "percentile": key},
        "memory_bytes": memory.parts,
        "memory_total_bytes": memory.total,
        "peak_moment": memory.moment,
        "budget_gib": budget,
        "flops": {
            "lengths_p50": typical[:2],
            "tokens": flops.tokens,
            "scored": flops.scored,
            "model": flops.model,
            "policy": flops.policy,
            "reference_forward": flops.reference_forward,
            "hardware": flops.hardware,
        },
    }


def format_plan(plan: dict[str, Any]) -> str:
    s = plan["settings"]
    lengths = plan["lengths"]
    lines = [
        f"lightning-dpo plan: {plan['model']} ({plan['parameters'] / 1e6:,.1f}M parameters"
        + (f", LoRA {plan['lora_parameters'] / 1e6:,.1f}M trainable" if plan["lora_parameters"] else "")
        + f"); {s['devices']} x {s['accelerator']}, {s['strategy']}, {s['precision']}",
        f"  reference {s['reference']}"
        + (f" in {s['reference_dtype']}" if s["reference_dtype"] else "")
        + f"; optimizer {s['optimizer']}"
        + (" (step in backward)" if s["optimizer_in_backward"] else "")
        + ("; activation checkpointing" if s["checkpointing"] else ""),
        f"  batch {s['batch_size']} pairs per device; prompt {lengths['prompt']}, completion {lengths['completion']} "
        f"tokens ({lengths['source']}); {plan['layout']} rows",
        f"peak memory per device (at the {plan['peak_moment']}):",
    ]
    for cause, value in plan["memory_bytes"].items():
        lines.append(f"  {cause.replace('_', ' '):<26}{value / GiB:9.2f} GiB")
    total = plan["memory_total_bytes"] / GiB
    verdict = ""
    if plan["budget_gib"]:
        fits = total <= 0.9 * plan["budget_gib"]
        verdict = f"   {'fits' if fits else 'does NOT fit'} in {plan['budget_gib']:.0f} GiB (90 % usable)"
    lines.append(f"  {'total':<26}{total:9.2f} GiB{verdict}")
    f = plan["flops"]
    lines.append(
        f"FLOPs per micro-batch per device (p50 lengths {f['lengths_p50'][0]} + {f['lengths_p50'][1]}): model "
        f"{f['model'] / 1e12:.2f} TFLOP (policy {f['policy'] / 1e12:.2f}, reference forward "
        f"{f['reference_forward'] / 1e12:.2f}); hardware {f['hardware'] / 1e12:.2f} TFLOP; {f['tokens']} unique "
        f"tokens, {f['scored']} scored"
    )
    return "\n".join(lines)
