"""The fused LM head (lightning_dpo.ops.fused_head) at a real shape: time and GFLOPS by chunk size.

    python benchmarks/bench_head.py [--vocab 151936] [--hidden 896] [--tokens 564] [--chunks 55 128 0 256 564]

K scored positions through a (V, H) head, forward (logits, logsumexp, gather, mean) and backward (recomputed
logits, softmax gradient, dh and dW), the head weight requiring grad as the policy's does. Model FLOPs:
forward 2·K·H·V, backward 4·K·H·V (the recompute, another 2·K·H·V, is extra hardware work). A vocabulary-tiled
variant (all K rows against one slice of V at a time, online logsumexp) was measured in issue 15's first phase
and was not faster on this CPU (notes/perf_findings.md); it is not kept.
"""

from __future__ import annotations

import argparse
import statistics
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vocab", type=int, default=151936)
    parser.add_argument("--hidden", type=int, default=896)
    parser.add_argument("--tokens", type=int, default=564)
    parser.add_argument(
        "--chunks",
        type=int,
        nargs="+",
        default=[55, 128, 0, 256, 564],
        help="tokens per chunk; 0: the default rule (auto_chunk_size)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch

    from lightning_dpo.ops.fused_head import auto_chunk_size, fused_head_logps

    torch.manual_seed(0)
    w = (torch.randn(args.vocab, args.hidden) * 0.02).requires_grad_()
    h = torch.randn(args.tokens, args.hidden).requires_grad_()
    y = torch.randint(0, args.vocab, (args.tokens,))
    flop = 2 * args.tokens * args.hidden * args.vocab

    def best(fn, seconds=1.0):
        fn()
        b, end = float("inf"), time.perf_counter() + seconds
        while time.perf_counter() < end:
            t = time.perf_counter()
            fn()
            b = min(b, time.perf_counter() - t)
        return b

    print("head GEMM rates by chunk rows C (best GFLOPS): z = h Wᵀ (C,V) | zᵀ = W hᵀ (V,C) | dh = dz W | dW += dzᵀ h")
    wd = w.detach()
    for c in sorted({55, 128, 256, args.tokens, auto_chunk_size(args.vocab, args.tokens)}):
        hc, dz = torch.randn(c, args.hidden), torch.randn(c, args.vocab)
        gw = torch.zeros(args.vocab, args.hidden)
        f = 2 * c * args.hidden * args.vocab
        gemms = (
            lambda hc=hc: hc @ wd.t(),
            lambda hc=hc: wd @ hc.t(),
            lambda dz=dz: dz @ wd,
            lambda hc=hc, dz=dz, gw=gw: gw.addmm_(dz.t(), hc),
        )
        rates = [f / best(fn) / 1e9 for fn in gemms]
        print(f"  C {c:4d}: " + " | ".join(f"{r:5.0f}" for r in rates), flush=True)
    default = auto_chunk_size(args.vocab, args.tokens)
    print(
        f"head: V {args.vocab}, H {args.hidden}, K {args.tokens}; default chunk {default} tokens "
        f"(55 before issue 15: 8M logits a block)"
    )
    print(f"{'chunk':>6}{'fwd s':>8}{'fwd GFLOPS':>12}{'bwd s':>8}{'bwd GFLOPS (model)':>20}{'block MiB':>11}")
    base = None
    for chunk in args.chunks:
        c = chunk or default
        fw, bw = [], []
        for _ in range(args.repeats):
            w.grad = h.grad = None
            start = time.perf_counter()
            out = fused_head_logps(h, w, None, y, chunk_size=c)
            mid = time.perf_counter()
            out.logps.sum().backward()
            end = time.perf_counter()
            fw.append(mid - start)
            bw.append(end - mid)
        grads = (w.grad.clone(), h.grad.clone(), out.logps.detach().clone())
        if base is None:
            base = grads
        diff = max(float((a - b).abs().max()) for a, b in zip(grads, base))
        f, b = statistics.median(fw), statistics.median(bw)
        label = f"{c:6d}" + ("*" if chunk == 0 else "")
        block = c * args.vocab * 4 / 2**20
        print(
            f"{label:>6}{f:8.3f}{flop / f / 1e9:12.0f}{b:8.3f}{2 * flop / b / 1e9:20.0f}{block:11.0f}"
            f"   max |Δ| vs first row {diff:.1e}"
        )


if __name__ == "__main__":
    main()
