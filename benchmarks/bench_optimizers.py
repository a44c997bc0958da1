"""Optimizer step time, transient memory and exactness at a real model's parameter shapes (default Qwen2.5-0.5B).

    python benchmarks/bench_optimizers.py [--config qwen] [--steps 3] [--only adamw_loop paper_rmsprop ...]

Parameters with the model's shapes (no model is built), random gradients; each optimizer is timed over
``--steps`` steps after one warm-up step (which allocates the state), and the RSS it adds above parameters +
gradients + state during a step is sampled (its temporaries). Exactness: each variant against torch's
for-loop implementation of the same optimizer, over 3 steps on a slice of the shapes (a layer + the
embedding), bitwise or as max |Δparam|.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import memtools  # noqa: E402

QWEN = {
    "num_hidden_layers": 24,
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "tie_word_embeddings": True,
    "model_type": "qwen2",
}


def shapes(config: dict) -> list[tuple[int, ...]]:
    from lightning_dpo.plan import ModelDims

    d = ModelDims.from_config(config)
    q, kv = d.q, d.kv
    layer = [
        (q, d.hidden),
        (q,),
        (kv, d.hidden),
        (kv,),
        (kv, d.hidden),
        (kv,),
        (d.hidden, q),
        (d.intermediate, d.hidden),
        (d.intermediate, d.hidden),
        (d.hidden, d.intermediate),
        (d.hidden,),
        (d.hidden,),
    ]
    out = [(d.vocab, d.hidden)] + layer * d.layers + [(d.hidden,)]
    return out if d.tied else out + [(d.vocab, d.hidden)]


def factories():
    import torch

    from lightning_dpo.optim import PaperRMSprop

    kw = {"lr": 1e-6, "weight_decay": 0.0}
    return {
        "adamw_loop": lambda p: torch.optim.AdamW(p, **kw, foreach=False),
        "adamw_foreach": lambda p: torch.optim.AdamW(p, **kw, foreach=True),
        "adamw_fused": lambda p: torch.optim.AdamW(p, **kw, fused=True),
        "rmsprop_loop": lambda p: torch.optim.RMSprop(p, lr=1e-6, foreach=False),
        "rmsprop_foreach": lambda p: torch.optim.RMSprop(p, lr=1e-6, foreach=True),
        "paper_rmsprop": lambda p: PaperRMSprop(p, lr=1e-6),  # lightning_dpo's default: blocked on CPU
    }


BASELINE = {
    "adamw_foreach": "adamw_loop",
    "adamw_fused": "adamw_loop",
    "rmsprop_foreach": "rmsprop_loop",
    "paper_rmsprop": "rmsprop_loop",
}


def exactness(shape_list, steps: int = 3) -> dict[str, str]:
    import torch

    fac = factories()
    subset = shape_list[:13]  # the embedding and the first layer
    results = {}
    finals = {}
    for name in fac:
        torch.manual_seed(0)
        params = [torch.randn(s, requires_grad=True) for s in subset]
        opt = fac[name](params)
        gen = torch.Generator().manual_seed(1)
        for _ in range(steps):
            for p in params:
                p.grad = torch.randn(p.shape, generator=gen) * 1e-2
            opt.step()
        finals[name] = [p.detach() for p in params]
    for name, base in BASELINE.items():
        diffs = [float((a - b).abs().max()) for a, b in zip(finals[name], finals[base])]
        same = all(torch.equal(a, b) for a, b in zip(finals[name], finals[base]))
        results[name] = "bitwise identical" if same else f"max |Δparam| {max(diffs):.1e}"
    return results


def time_one(name: str, shape_list, steps: int) -> dict:
    import torch

    torch.manual_seed(0)
    params = [torch.randn(s, requires_grad=True) for s in shape_list]
    for p in params:
        p.grad = torch.randn_like(p) * 1e-2
    opt = factories()[name](params)
    opt.step()  # allocates the state
    gc.collect()
    base = memtools.rss()["rss"]
    times = []
    with memtools.RssSampler(0.002) as sampler:
        sampler.phase("steps")
        for _ in range(steps):
            start = time.perf_counter()
            opt.step()
            times.append(time.perf_counter() - start)
    transient = sampler.peaks["steps"] - base
    state = sum(t.numel() * t.element_size() for s in opt.state.values() for t in s.values() if torch.is_tensor(t))
    del opt, params
    gc.collect()
    memtools.malloc_trim()
    return {"step_s": statistics.median(times), "transient_bytes": transient, "state_bytes": state}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--only", nargs="*")
    args = parser.parse_args()
    shape_list = shapes(QWEN)
    n = sum(__import__("math").prod(s) for s in shape_list)
    print(f"Qwen2.5-0.5B parameter shapes: {len(shape_list)} tensors, {n / 1e6:.1f}M parameters (fp32)")
    exact = exactness(shape_list)
    print(f"{'optimizer':<18}{'step s':>8}{'transient MiB':>15}{'state MiB':>11}  exactness vs torch's for-loop")
    for name in args.only or list(factories()):
        r = time_one(name, shape_list, args.steps)
        print(
            f"{name:<18}{r['step_s']:8.2f}{r['transient_bytes'] / 2**20:15.0f}{r['state_bytes'] / 2**20:11.0f}  "
            f"{exact.get(name, '(baseline)')}",
            flush=True,
        )


if __name__ == "__main__":
    main()
