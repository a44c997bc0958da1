"""Segment attention for packed rows, forward + backward of one layer's attention: one slice per span (the
implementation before issue 15, kept here only to compare) against lightning_dpo's split spans.

    python benchmarks/bench_attention.py [--pairs 2 8] [--prompt 150] [--completion 75] [--repeats 7]

Query (1, Hq, S, D), key/value (1, Hkv, S, D) with Qwen2.5-0.5B's heads (14 / 2, D 64), shared-prompt spans
of ``--pairs`` pairs; alternates the two implementations ``--repeats`` times and prints the best of each.
"""

from __future__ import annotations

import argparse
import time


def sliced_spans(query, key, value, spans):
    """The earlier implementation: grouped-query heads repeated, then a slice of q/k/v per span."""
    import torch
    import torch.nn.functional as F

    groups = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(groups, 1), value.repeat_interleave(groups, 1)
    pieces = []
    for start, end, prefix_start, prefix_end in spans:
        q, k, v = query[:, :, start:end], key[:, :, start:end], value[:, :, start:end]
        prefix = prefix_end - prefix_start
        mask, causal = None, True
        if prefix:
            k = torch.cat([key[:, :, prefix_start:prefix_end], k], 2)
            v = torch.cat([value[:, :, prefix_start:prefix_end], v], 2)
            diff = (prefix + torch.arange(end - start))[:, None] - torch.arange(prefix + end - start)[None, :]
            mask, causal = diff >= 0, False
        pieces.append(F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal))
    return torch.cat(pieces, 2).transpose(1, 2).contiguous()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, nargs="+", default=[2, 8])
    parser.add_argument("--prompt", type=int, default=150)
    parser.add_argument("--completion", type=int, default=75)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args()
    import torch

    from lightning_dpo.ops.segment_attention import segment_attention_forward

    for pairs in args.pairs:
        spans, pos = [], 0
        for _ in range(pairs):
            p, c = args.prompt, args.completion
            spans.append((pos, pos + p + c, pos, pos))
            spans.append((pos + p + c, pos + p + 2 * c, pos, pos + p))
            pos += p + 2 * c
        spans = tuple(spans)
        torch.manual_seed(0)
        q = torch.randn(1, 14, pos, 64, requires_grad=True)
        k = torch.randn(1, 2, pos, 64, requires_grad=True)
        v = torch.randn(1, 2, pos, 64, requires_grad=True)
        g = torch.randn(1, pos, 14, 64)
        runs = {
            "sliced": lambda q=q, k=k, v=v, spans=spans: sliced_spans(q, k, v, spans),
            "split": lambda q=q, k=k, v=v, spans=spans: segment_attention_forward(
                None, q, k, v, None, lightning_dpo_spans=spans
            )[0],
        }
        best = dict.fromkeys(runs, float("inf"))
        for _ in range(args.repeats):
            for name, fn in runs.items():
                start = time.perf_counter()
                torch.autograd.grad(fn(), (q, k, v), g)
                best[name] = min(best[name], time.perf_counter() - start)
        print(
            f"{pairs} pairs, S = {pos}, {len(spans)} spans: sliced {best['sliced'] * 1e3:.1f} ms, split "
            f"{best['split'] * 1e3:.1f} ms per layer fwd+bwd ({best['sliced'] / best['split']:.2f}x)"
        )


if __name__ == "__main__":
    main()
