"""Where a DPO step's time and memory go, at a real model's shape (default: Qwen2.5-0.5B's, see bench_vs_trl).

    python benchmarks/profile_step.py [--shape qwen] [--workdir /tmp/perf/qwen] [--steps 3] [--warmup 2]
        [--optimizer adamw|adamw_fused|rmsprop|...] [--in-backward] [--module-kwargs JSON]
        [--malloc default|trim] [--profile] [--json out.json]

The step is DPOModule.dpo_step + backward + optimizer step + zero_grad, run by hand (no Trainer), on the
same batches, model and data that bench_vs_trl builds (cached in --workdir). Printed:

- phase times per step (policy forward, reference forward, loss, backward, optimizer), with the FLOPs of each
  phase from lightning_dpo.plan and the achieved GFLOPS against an fp32 matmul rate measured in this process;
- with --profile, torch.profiler's self CPU time of one step by op and phase (what runs below the roofline);
- memory: RSS (anonymous / file) and glibc heap (in use / held free) at each phase boundary, the RSS peak of
  each phase (a sampling thread), and the bytes autograd saved for backward during the policy forward.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import memtools  # noqa: E402
from memtools import GiB  # noqa: E402


def optimizers() -> dict:
    import torch

    from lightning_dpo.optim import PaperRMSprop

    adamw = {"lr": 1e-6, "weight_decay": 0.0}
    return {
        "adamw": lambda p: torch.optim.AdamW(p, **adamw),  # torch's CPU default: the for-loop step
        "adamw_foreach": lambda p: torch.optim.AdamW(p, **adamw, foreach=True),
        "adamw_fused": lambda p: torch.optim.AdamW(p, **adamw, fused=True),
        "rmsprop": lambda p: PaperRMSprop(p),  # lightning_dpo's default: blocked on CPU
        "rmsprop_torch": lambda p: torch.optim.RMSprop(p, lr=1e-6),  # torch's for-loop step
    }


OPTIMIZER_NAMES = ("adamw", "adamw_foreach", "adamw_fused", "rmsprop", "rmsprop_torch")


def prepare(workdir: Path, shape_name: str, batches: int) -> None:
    """Model and data as bench_vs_trl builds them (same seeds), once."""
    import bench_vs_trl as bench

    shape = bench.SHAPES[shape_name]
    if not (workdir / "model" / "config.json").exists():
        workdir.mkdir(parents=True, exist_ok=True)
        bench.build_model(workdir / "model", shape)
    if not (workdir / "data").exists():
        bench.build_data(workdir / "data", shape, shape.pairs * batches)


def matmul_rate(size: int = 2048, seconds: float = 3.0) -> float:
    import bench_vs_trl as bench

    return bench.matmul_peak(size, seconds)


def gemm_table(dims, tokens: int, seconds: float = 0.6) -> list[dict]:
    """The rate of each GEMM a layer runs at ``tokens`` rows: forward x @ Wᵀ, backward dY @ W and dYᵀ @ x."""
    import torch
    import torch.nn.functional as F

    h, q, kv, i = dims.hidden, dims.heads * dims.head_dim, dims.kv_heads * dims.head_dim, dims.intermediate
    out = []
    for name, n_in, n_out in (
        ("q/o proj", h, q),
        ("k/v proj", h, kv),
        ("mlp gate/up", h, i),
        ("mlp down", i, h),
        ("lm head (55 rows)", h, dims.vocab),
    ):
        m = 55 if name.startswith("lm head") else tokens
        x, w, dy = torch.randn(m, n_in), torch.randn(n_out, n_in), torch.randn(m, n_out)
        row = {"gemm": name, "m": m, "k": n_in, "n": n_out}
        gemms = (
            ("fwd", lambda x=x, w=w: F.linear(x, w)),
            ("bwd dX", lambda dy=dy, w=w: dy @ w),
            ("bwd dW", lambda dy=dy, x=x: dy.t() @ x),
        )
        for kind, fn in gemms:
            fn()
            best, end = float("inf"), time.perf_counter() + seconds
            while time.perf_counter() < end:
                t = time.perf_counter()
                fn()
                best = min(best, time.perf_counter() - t)
            row[kind] = 2 * m * n_in * n_out / best
        out.append(row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", default="qwen")
    parser.add_argument("--workdir", default="/tmp/perf/qwen")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--optimizer", default="adamw", choices=OPTIMIZER_NAMES)
    parser.add_argument("--in-backward", action="store_true", help="the optimizer step in backward")
    parser.add_argument("--profile", action="store_true", help="torch.profiler over the last step")
    parser.add_argument("--module-kwargs", default="{}", help="extra DPOModule arguments, JSON")
    parser.add_argument(
        "--malloc", default="default", choices=("default", "trim"), help="trim: malloc_trim(0) after each step"
    )
    parser.add_argument("--json")
    args = parser.parse_args()

    os.environ.setdefault("LIGHTNING_DPO_CACHE", str(Path(args.workdir) / "cache"))
    os.environ.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    import bench_vs_trl as bench

    workdir = Path(args.workdir)
    shape = bench.SHAPES[args.shape]
    total = args.warmup + args.steps + (1 if args.profile else 0)  # the profiled step is extra, not timed
    prepare(workdir, args.shape, max(total, 8))

    import torch

    from lightning_dpo import DPOModule
    from lightning_dpo import module as module_mod
    from lightning_dpo.optim import OptimizerInBackward
    from lightning_dpo.plan import ModelDims, step_flops

    peak_rate = matmul_rate()
    dims0 = ModelDims.from_config(json.loads((workdir / "model" / "config.json").read_text()))
    gemms = gemm_table(dims0, 600 if args.shape == "qwen" else 1500)
    print(f"fp32 matmul peak {peak_rate / 1e9:.0f} GFLOPS; GEMMs at the model's shapes, best GFLOPS:")
    for g in gemms:
        print(
            f"  {g['gemm']:<18} {g['m']}x{g['k']} -> {g['n']}: fwd {g['fwd'] / 1e9:.0f}, "
            f"bwd dX {g['bwd dX'] / 1e9:.0f}, "
            f"bwd dW {g['bwd dW'] / 1e9:.0f}",
            flush=True,
        )
    sampler = memtools.RssSampler()
    marks: list[tuple[str, dict, dict]] = []

    def mark(name: str) -> None:
        marks.append((name, memtools.rss(), memtools.mallinfo()))
        sampler.phase(name)

    with sampler:
        mark("imported")
        data = bench.datamodule(str(workdir / "model"), str(workdir / "data"), shape)
        data.prepare_data()
        data.setup("fit")
        loader = iter(data.train_dataloader())
        batches = [next(loader) for _ in range(total)]
        mark("data")
        torch.manual_seed(0)
        factory = optimizers()[args.optimizer]
        module = DPOModule(
            model_name_or_path=str(workdir / "model"),
            loss={"beta": 0.1},
            lr_scheduler=None,
            optimizer=factory,
            **json.loads(args.module_kwargs),
        )
        module.configure_model()
        mark("loaded")
        params = [p for p in module.policy.parameters() if p.requires_grad]
        optimizer = OptimizerInBackward(params, factory) if args.in_backward else factory(params)
        dims = ModelDims.from_config(json.loads((workdir / "model" / "config.json").read_text()))

        timers: dict[str, float] = {}
        originals = (module_mod.completion_logps, module.reference.logps)

        def timed(name, fn):
            def wrapper(*a, **k):
                start = time.perf_counter()
                with torch.profiler.record_function(f"phase:{name}"):
                    out = fn(*a, **k)
                timers[name] = timers.get(name, 0.0) + time.perf_counter() - start
                sampler.phase(f"after {name}")
                return out

            return wrapper

        module_mod.completion_logps = timed("policy_forward", originals[0])
        module.reference.logps = timed("reference_forward", originals[1])
        saved = None
        steps: list[dict] = []
        prof = None
        for i, batch in enumerate(batches):
            last = i == total - 1
            if i == 0:
                saved = memtools.SavedTensors(exclude=list(module.parameters()))
            ctx = saved if i == 0 else contextlib.nullcontext()
            if last and args.profile:
                prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], record_shapes=True)
                prof.__enter__()
            timers.clear()
            memtools.reset_peak()
            start = time.perf_counter()
            sampler.phase(f"step{i}:forward")
            with ctx:
                loss, _stats = module.dpo_step(batch)
            t_fwd = time.perf_counter()
            sampler.phase(f"step{i}:backward")
            with torch.profiler.record_function("phase:backward"):
                loss.backward()
            t_bwd = time.perf_counter()
            sampler.phase(f"step{i}:optimizer")
            with torch.profiler.record_function("phase:optimizer"):
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if args.malloc == "trim":
                    memtools.malloc_trim()
            end = time.perf_counter()
            step_peak = memtools.rss()["peak"]
            mark(f"step{i}")
            if last and prof is not None:
                prof.__exit__(None, None, None)
            lengths = pair_lengths(batch)
            flops = step_flops(dims, lengths)
            steps.append(
                {
                    "step": end - start,
                    "forward": t_fwd - start,
                    "backward": t_bwd - t_fwd,
                    "optimizer": end - t_bwd,
                    "policy_forward": timers.get("policy_forward", 0.0),
                    "reference_forward": timers.get("reference_forward", 0.0),
                    "model_flops": flops.model,
                    "policy_flops": flops.policy,
                    "hardware_flops": flops.hardware,
                    "reference_flops": flops.reference_forward,
                    "policy_forward_flops": flops.policy_forward,
                    "tokens": flops.tokens,
                    "scored": flops.scored,
                    "peak_rss": step_peak,
                    "pairs": lengths,
                }
            )
            print(
                f"step {i}: {steps[-1]['step']:.2f} s (fwd {steps[-1]['forward']:.2f} = policy "
                f"{steps[-1]['policy_forward']:.2f} + ref {steps[-1]['reference_forward']:.2f}; bwd "
                f"{steps[-1]['backward']:.2f}; opt {steps[-1]['optimizer']:.2f}); peak RSS {step_peak / GiB:.2f} GiB",
                flush=True,
            )
        mark("end")
    module_mod.completion_logps = originals[0]

    report = summarise(steps[args.warmup : args.warmup + args.steps], peak_rate, params, optimizer)
    report["saved_for_backward_bytes"] = saved.total
    report["gemms"] = gemms
    report["steps"] = steps
    report["model_config"] = str(workdir / "model" / "config.json")
    report["saved_by_shape"] = sorted(((str(k), v) for k, v in saved.by_shape.items()), key=lambda kv: -kv[1])[:15]
    report["marks"] = [(n, r, m) for n, r, m in marks]
    report["phase_peaks"] = sampler.peaks
    report["rss_timeline"] = sampler.timeline
    report["optimizer"] = args.optimizer + ("_inbwd" if args.in_backward else "")
    report["malloc"] = args.malloc
    report["module_kwargs"] = json.loads(args.module_kwargs)
    print_report(report)
    if prof is not None:
        report["profile"] = profile_table(prof)
        print_profile(report["profile"])
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1, default=str))


def pair_lengths(batch) -> list[tuple[int, int, int]]:
    half = batch["input_ids"].shape[0] // 2
    comp = batch["completion_mask"].sum(-1).tolist()
    total = batch["attention_mask"].sum(-1).tolist()
    return [(int(total[i] - comp[i]), int(comp[i]), int(comp[half + i])) for i in range(half)]


def summarise(steps: list[dict], peak_rate: float, params, optimizer) -> dict:
    med = {k: statistics.median(s[k] for s in steps) for k in steps[0] if k != "pairs"}
    compute = med["step"] - med["optimizer"]
    weights = sum(p.numel() * p.element_size() for p in params)
    state = sum(
        t.numel() * t.element_size() for s in optimizer.state.values() for t in s.values() if hasattr(t, "numel")
    )
    return {
        "median": med,
        "matmul_peak_flops": peak_rate,
        "model_flops_per_s_excl_optimizer": statistics.median(
            s["model_flops"] / (s["step"] - s["optimizer"]) for s in steps
        ),
        "roofline_fraction": statistics.median(s["model_flops"] / (s["step"] - s["optimizer"]) for s in steps)
        / peak_rate,
        "compute_s": compute,
        "param_bytes": weights,
        "optimizer_state_bytes": state,
        "floor_bytes": 3 * weights + state,  # policy weights + grads + reference weights + optimizer state
        "step_peak_rss": max(s["peak_rss"] for s in steps),
    }


def print_report(r: dict) -> None:
    m = r["median"]
    peak = r["matmul_peak_flops"]
    print(
        f"\nfp32 matmul peak (2048^3, this process): {peak / 1e9:.0f} GFLOPS; optimizer: {r['optimizer']}; "
        f"malloc: {r['malloc']}; module: {r['module_kwargs'] or 'defaults'}"
    )
    print(
        f"median step {m['step']:.2f} s: policy fwd {m['policy_forward']:.2f}, reference fwd "
        f"{m['reference_forward']:.2f}, "
        f"rest of dpo_step {m['forward'] - m['policy_forward'] - m['reference_forward']:.3f}, "
        f"backward {m['backward']:.2f}, optimizer {m['optimizer']:.2f}"
    )
    rows = [
        ("policy forward", m["policy_forward"], m["policy_forward_flops"]),
        ("reference forward", m["reference_forward"], m["reference_flops"]),
        ("backward (policy)", m["backward"], m["policy_flops"] - m["policy_forward_flops"]),
        ("step excl. optimizer", r["compute_s"], m["model_flops"]),
    ]
    print(f"  {'phase':<22}{'s':>8}{'model GFLOP':>13}{'GFLOPS':>9}{'of peak':>9}")
    for name, t, f in rows:
        print(f"  {name:<22}{t:8.2f}{f / 1e9:13.0f}{f / t / 1e9:9.0f}{f / t / peak:9.0%}")
    print(
        f"  roofline fraction (model FLOPs / (step - optimizer) / peak): {r['roofline_fraction']:.0%}; "
        f"tokens {m['tokens']:.0f}, scored {m['scored']:.0f}"
    )
    print(
        f"memory: floor (weights + grads + reference + optimizer state) {r['floor_bytes'] / GiB:.2f} GiB; "
        f"step peak RSS {r['step_peak_rss'] / GiB:.2f} GiB (+{(r['step_peak_rss'] - r['floor_bytes']) / GiB:.2f}); "
        f"saved for backward {r['saved_for_backward_bytes'] / GiB:.2f} GiB"
    )
    for name, rs, mi in r["marks"]:
        print(
            f"  at {name:<10} rss {rs['rss'] / GiB:6.2f} (anon {rs['anon'] / GiB:6.2f}, file {rs['file'] / GiB:5.2f}) "
            f"hwm {rs['peak'] / GiB:6.2f} | malloc in use {mi['in_use'] / GiB:6.2f}, "
            f"held free {mi['free_held'] / GiB:5.2f}, "
            f"mmapped {mi['mmapped'] / GiB:6.2f}"
        )
    print("  RSS peak by phase (sampled):")
    for name, v in r["phase_peaks"].items():
        print(f"    {name:<28}{v / GiB:7.2f} GiB")


CATEGORIES = [
    ("gemm", ("aten::mm", "aten::addmm", "aten::bmm", "aten::baddbmm", "aten::addmm_", "aten::_addmm_activation")),
    ("sdpa", ("scaled_dot_product", "flash_attention")),
    (
        "copy/cat/index",
        (
            "aten::copy_",
            "aten::cat",
            "aten::index",
            "aten::index_select",
            "aten::repeat_interleave",
            "aten::index_add",
            "aten::index_put",
            "aten::gather",
            "aten::scatter",
            "aten::clone",
            "aten::contiguous",
            "aten::embedding",
            "aten::_embedding",
            "aten::stack",
            "aten::to",
            "aten::_to_copy",
            "aten::empty_like",
            "aten::fill_",
            "aten::zero_",
            "aten::zeros",
        ),
    ),
    ("optimizer (foreach/fused)", ("_foreach", "_fused_")),
    ("reductions", ("aten::sum", "aten::mean", "aten::logsumexp", "aten::max", "aten::amax", "aten::norm")),
]


def _category(name: str) -> str:
    for cat, keys in CATEGORIES:
        if any(name.startswith(k) or k in name for k in keys):
            return cat
    return "elementwise/other" if name.startswith("aten::") else "python/other"


def profile_table(prof) -> dict:
    """Self CPU time (s) by phase and op, from the profiler's events (phase = enclosing record_function)."""
    events = prof.events()
    phases = [
        (e.time_range.start, e.time_range.end, e.name[len("phase:") :]) for e in events if e.name.startswith("phase:")
    ]
    by: dict[tuple[str, str], list[float]] = {}
    for e in events:
        if e.name.startswith("phase:") or e.name.startswith("ProfilerStep"):
            continue
        t = e.time_range.start
        inside = [p for p in phases if p[0] <= t <= p[1]]
        phase = min(inside, key=lambda p: p[1] - p[0])[2] if inside else "other"
        key = (phase, e.name)
        cell = by.setdefault(key, [0.0, 0])
        cell[0] += e.self_cpu_time_total / 1e6
        cell[1] += 1
    return {f"{p}|{n}": v for (p, n), v in by.items()}


def print_profile(table: dict) -> None:
    phases: dict[str, dict[str, float]] = {}
    ops: dict[str, list] = {}
    for key, (t, count) in table.items():
        phase, name = key.split("|", 1)
        cat = _category(name)
        phases.setdefault(phase, {})
        phases[phase][cat] = phases[phase].get(cat, 0.0) + t
        ops.setdefault(name, [0.0, 0, set()])
        ops[name][0] += t
        ops[name][1] += count
        ops[name][2].add(phase)
    print("\nprofiler, self CPU s by phase and category (one step):")
    for phase, cats in phases.items():
        total = sum(cats.values())
        print(
            f"  {phase:<20}{total:7.2f}  "
            + ", ".join(f"{c} {v:.2f}" for c, v in sorted(cats.items(), key=lambda kv: -kv[1]))
        )
    print("top ops by self CPU s:")
    for name, (t, count, ph) in sorted(ops.items(), key=lambda kv: -kv[1][0])[:30]:
        print(f"  {name:<58}{t:7.3f} s {count:7d} calls  {','.join(sorted(ph))}")


if __name__ == "__main__":
    main()
