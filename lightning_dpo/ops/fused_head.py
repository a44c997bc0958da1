"""LM head + log-softmax + gather, fused and chunked over tokens, with its own backward.

For K selected positions with hidden states h (K, H), a head W (V, H) (+ bias b (V,)), and target ids y (K,):

    z_k = transform(W h_k + b)                  # (V,) logits of position k
    logp_k = z_k[y_k] − logsumexp(z_k)          # what DPO sums
    mean_k = mean_v z_k,v                       # the logits/* metrics (detached)
    lss_k  = log Σ_v p_v² = logsumexp(2 z_k) − 2 logsumexp(z_k)   # WPO's weights (detached, optional)
    H_k    = −Σ_v p_v log p_v                                       # entropy (detached, optional)
    top1_k = argmax_v z_k == y_k                                    # token accuracy (optional)

``transform`` is the identity for a plain head, or a model's logit scaling and final soft-capping
(z = c·tanh(s·y / c), Gemma 2; z = s·y, Cohere, Granite).

:func:`fused_head_logps` computes this ``chunk_size`` tokens at a time: only a (chunk, V) block of logits
exists at once, forward and backward, so peak memory grows with the chunk, not with K·V. The backward
recomputes each block from the saved h and the per-token log-normaliser (one more head matmul instead of
keeping K·V floats): with g the incoming gradient of logp,

    ∂logp_k / ∂z_k = onehot(y_k) − softmax(z_k)  =>  dz = g_k (onehot − p),  dh = dz' W,  dW = dz'ᵀ h,

where dz' is dz through ``transform``. :func:`reference_head_logps` is the same maths on full logits, for
parity tests.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

DEFAULT_CHUNK_ELEMENTS = 1 << 25
"""Logit elements per chunk when no chunk size is given: 128 MiB of fp32 (e.g. 4,096 tokens × 8k vocabulary,
220 × 152k). Peak memory of the head is a few such blocks."""

MIN_CHUNK_ROWS = 128
"""Fewest tokens per chunk when no chunk size is given, whatever the vocabulary. The head's three GEMMs per
chunk ((C, H) × (H, V) forward, again in backward, and (V, C) × (C, H) for dW) have C as their short side;
measured on a 2-core AVX2 CPU at V = 151,936 (notes/perf_findings.md), 55-row chunks ran at 20-40 % of the
machine's matmul peak and 256-row ones at 40-55 %, halving the head's time."""

UPCAST_SLICE_ROWS = 1 << 14
"""Vocabulary rows cast at a time when a head stored in a narrower dtype than the compute (a bf16-stored
reference computed in fp32) is upcast: a (16k, H) transient instead of a full-precision copy of the head."""


class HeadLogps(NamedTuple):
    """Per-token outputs of the head at the selected positions; every tensor is ``(K,)``."""

    logps: Tensor
    """log p(y_k | prefix), in at least fp32; differentiable."""
    mean_logits: Tensor
    """Vocabulary-mean logit (detached)."""
    log_sum_sq: Tensor | None = None
    """log Σ_v p_v² (detached), when asked for (WPO)."""
    entropy: Tensor | None = None
    """The entropy of the next-token distribution in nats (detached), when asked for (``with_stats``)."""
    is_top1: Tensor | None = None
    """Whether the target is the most likely token (bool), when asked for (``with_stats``)."""


def auto_chunk_size(vocab: int, tokens: int | None = None, elements: int = DEFAULT_CHUNK_ELEMENTS) -> int:
    """Tokens per chunk: as many as fit ``elements`` logits in one (chunk, V) block, never fewer than
    :data:`MIN_CHUNK_ROWS` (short GEMMs waste the matmul units). Given the number of ``tokens``, the chunks
    are balanced, so that the last one is not a sliver: 564 tokens at V = 151,936 -> 3 chunks of 188."""
    rows = max(MIN_CHUNK_ROWS, elements // max(vocab, 1))
    if tokens is None or tokens <= rows:
        return max(1, rows if tokens is None else tokens)
    chunks = -(-tokens // rows)
    return -(-tokens // chunks)


def _transform(y: Tensor, logit_scale: float, softcap: float | None) -> Tensor:
    """A model's logit post-processing, in place on the fp32 block ``y``: z = c·tanh(s·y / c)."""
    if logit_scale != 1.0:
        y.mul_(logit_scale)
    if softcap is not None:
        y.div_(softcap).tanh_().mul_(softcap)
    return y


def _compute_dtype(hidden: Tensor) -> torch.dtype:
    """The matmul dtype the model's own head would use: autocast's, or the hidden states'."""
    device = hidden.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else hidden.dtype


def _block(h: Tensor, weight: Tensor, bias: Tensor | None, out: torch.dtype, scale: float, cap: float | None) -> Tensor:
    """(C, H) hidden -> (C, V) transformed logits in ``out`` (at least fp32). A ``weight`` narrower than ``h``
    (a bf16-stored head computed in fp32) is upcast :data:`UPCAST_SLICE_ROWS` rows at a time."""
    if weight.dtype == h.dtype:
        return _transform(F.linear(h, weight, bias).to(out), scale, cap)
    z = h.new_empty(h.shape[0], weight.shape[0], dtype=out)  # (C, V)
    for v in range(0, weight.shape[0], UPCAST_SLICE_ROWS):
        rows = slice(v, v + UPCAST_SLICE_ROWS)
        b = bias[rows].to(h.dtype) if bias is not None else None
        z[:, rows] = F.linear(h, weight[rows].to(h.dtype), b)
    return _transform(z, scale, cap)


def _for_compute(weight: Tensor, compute: torch.dtype) -> Tensor:
    """The head weight as the chunks read it: cast once to a narrower compute dtype (autocast), kept as it is
    when it is narrower than the compute (upcast slice by slice in :func:`_block`, not copied whole)."""
    if weight.dtype.itemsize < torch.empty((), dtype=compute).element_size() and weight.is_floating_point():
        return weight
    return weight.to(compute)


class _FusedHeadLogps(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, bias, labels, chunk_size, logit_scale, softcap, with_wpo, with_stats):
        # hidden (K, H), weight (V, H), bias (V,) or None, labels (K,) long
        compute = _compute_dtype(hidden)
        out = torch.promote_types(compute, torch.float32)
        device = hidden.device.type
        num_tokens = hidden.shape[0]
        logps = hidden.new_empty(num_tokens, dtype=out)
        log_norm = hidden.new_empty(num_tokens, dtype=out)  # logsumexp(z_k), kept for the backward
        mean_logits = hidden.new_empty(num_tokens, dtype=out)
        log_sum_sq = hidden.new_empty(num_tokens if with_wpo else 0, dtype=out)
        entropy = hidden.new_empty(num_tokens if with_stats else 0, dtype=out)
        is_top1 = hidden.new_empty(num_tokens if with_stats else 0, dtype=torch.bool)
        with torch.autocast(device, enabled=False):
            w = _for_compute(weight, compute)  # one cast for all chunks (a no-op without autocast)
            b = bias.to(w.dtype) if bias is not None else None
            for start in range(0, num_tokens, chunk_size):
                rows = slice(start, start + chunk_size)
                z = _block(hidden[rows].to(compute), w, b, out, logit_scale, softcap)  # (C, V)
                lse = torch.logsumexp(z, -1)  # (C,)
                log_norm[rows] = lse
                logps[rows] = z.gather(1, labels[rows, None]).squeeze(1) - lse
                mean_logits[rows] = z.mean(-1)
                if with_stats:  # before WPO's in-place doubling of z
                    is_top1[rows] = z.argmax(-1) == labels[rows]
                    logp = z - lse[:, None]  # (C, V); −Σ p·log p, not lse − Σ p·z, which cancels when peaked
                    entropy[rows] = -torch.linalg.vecdot(logp.exp(), logp)
                    del logp
                if with_wpo:
                    log_sum_sq[rows] = torch.logsumexp(z.mul_(2), -1) - 2 * lse
        ctx.save_for_backward(hidden, weight, bias, labels, log_norm)
        ctx.config = (chunk_size, logit_scale, softcap, compute)
        ctx.mark_non_differentiable(mean_logits, log_sum_sq, entropy, is_top1)
        return logps, mean_logits, log_sum_sq, entropy, is_top1

    @staticmethod
    def backward(ctx, grad_logps, *_grad_stats):
        hidden, weight, bias, labels, log_norm = ctx.saved_tensors
        chunk_size, logit_scale, softcap, compute = ctx.config
        need_h, need_w, need_b = ctx.needs_input_grad[:3]
        out = log_norm.dtype
        grad_h = torch.empty_like(hidden) if need_h else None
        # dW accumulates over chunks in at least fp32, so that half-precision chunk products are not rounded.
        # The first chunk writes it (no zero-filled (V, H) pass), the others add to it.
        accumulate = torch.promote_types(weight.dtype, torch.float32)
        grad_w = grad_b = None
        with torch.autocast(hidden.device.type, enabled=False):
            w = weight.to(compute)
            b = bias.to(compute) if bias is not None else None
            for start in range(0, hidden.shape[0], chunk_size):
                rows = slice(start, start + chunk_size)
                h = hidden[rows].to(compute)
                z = _block(h, w, b, out, logit_scale, softcap)  # (C, V), recomputed
                g = grad_logps[rows].to(out)  # (C,)
                # Through z = c·tanh(s·y/c): dz/dy = s·(1 − tanh²), and tanh = z/c.
                dcap = (z / softcap).square_().neg_().add_(1) if softcap is not None else None  # (C, V)
                # dz = g (onehot − p), built in place over z.
                dz = z.sub_(log_norm[rows, None]).exp_().mul_(-g[:, None])
                dz.scatter_add_(1, labels[rows, None], g[:, None])
                if dcap is not None:
                    dz.mul_(dcap)
                if logit_scale != 1.0:
                    dz.mul_(logit_scale)
                if need_h:
                    grad_h[rows] = (dz.to(compute) @ w).to(hidden.dtype)
                if need_w:
                    part = (dz.t().to(accumulate), h.to(accumulate))  # (V, C), (C, H)
                    grad_w = torch.mm(*part) if grad_w is None else grad_w.addmm_(*part)
                if need_b:
                    part = dz.sum(0).to(accumulate)
                    grad_b = part if grad_b is None else grad_b.add_(part)
        if need_w:
            grad_w = torch.zeros(weight.shape, dtype=accumulate, device=weight.device) if grad_w is None else grad_w
            grad_w = grad_w.to(weight.dtype)
        if need_b:
            grad_b = torch.zeros(weight.shape[0], dtype=accumulate, device=weight.device) if grad_b is None else grad_b
            grad_b = grad_b.to(bias.dtype)
        return grad_h, grad_w, grad_b, None, None, None, None, None, None


def fused_head_logps(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    labels: Tensor,
    *,
    chunk_size: int | None = None,
    logit_scale: float = 1.0,
    softcap: float | None = None,
    with_wpo: bool = False,
    with_stats: bool = False,
) -> HeadLogps:
    """Per-token log-probs of ``labels`` under the head, ``chunk_size`` tokens at a time (see the module doc).

    Args:
        hidden: (K, H) final hidden states at the positions that predict ``labels``.
        weight: (V, H) the LM head's weight; bias: (V,) or ``None``.
        labels: (K,) target token ids.
        chunk_size: Tokens per block of logits; ``None``: :func:`auto_chunk_size` (about 32M logits a block,
            at least 128 tokens, balanced).
        logit_scale, softcap: The model's logit post-processing (1.0 and ``None`` for a plain head).
        with_wpo: Also return log Σ_v p_v² per token.
        with_stats: Also return each token's entropy and whether its target is the top-1 token (one more
            exponential and one argmax per block of logits).
    """
    chunk = chunk_size or auto_chunk_size(weight.shape[0], hidden.shape[0])
    logps, mean_logits, lss, entropy, is_top1 = _FusedHeadLogps.apply(
        hidden, weight, bias, labels, chunk, float(logit_scale), softcap, with_wpo, with_stats
    )
    stats = (entropy, is_top1) if with_stats else (None, None)
    return HeadLogps(logps, mean_logits, lss if with_wpo else None, *stats)


def reference_head_logps(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    labels: Tensor,
    *,
    logit_scale: float = 1.0,
    softcap: float | None = None,
    with_wpo: bool = False,
    with_stats: bool = False,
) -> HeadLogps:
    """The same outputs from full (K, V) logits and autograd: the simple path the fused one must match."""
    z = F.linear(hidden, weight, bias)  # (K, V)
    z = z.to(torch.promote_types(z.dtype, torch.float32)) * logit_scale
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    log_norm = z.logsumexp(-1)
    logps = z.gather(1, labels[:, None]).squeeze(1) - log_norm
    with torch.no_grad():
        lss = (2 * z).logsumexp(-1) - 2 * log_norm if with_wpo else None
        stats = (entropy_from_logits(z), z.argmax(-1) == labels) if with_stats else (None, None)
        return HeadLogps(logps, z.mean(-1), lss, *stats)


def entropy_from_logits(z: Tensor) -> Tensor:
    """(..., V) logits -> (...) entropy of softmax(z) in nats, −Σ p log p, computed the plain way."""
    logp = torch.log_softmax(z, -1)
    return -(logp.exp() * logp).sum(-1)
