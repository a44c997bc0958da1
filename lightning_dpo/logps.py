"""Sequence log-probs of completion tokens.

A batch holds N = 2B sequences (chosen rows first, then rejected), right-padded to length T:

    input_ids        (N, T)  prompt tokens, completion tokens (EOS included when it fits), padding
    attention_mask   (N, T)  1 on prompt + completion tokens
    completion_mask  (N, T)  1 on completion tokens only

Both masks are built by the collator from sequence lengths, never from token ids, so a pad token that
equals EOS cannot hide a real EOS.

The sequence log-prob is Σ_t log πθ(token_t | tokens_<t) over completion positions t; position t's
logits come from the model's output at t−1 (the usual one-step label shift).

Two paths compute the same :class:`SequenceLogps` (:func:`completion_logps` picks one):

- the reference path, :func:`sequence_logps` on the model's full (N, T, V) logits: simple, and what the fast
  path is tested against;
- the fast path: the decoder body only, the LM head only at the K positions that predict a completion token,
  through a fused, chunked head (:mod:`lightning_dpo.ops.fused_head`), so no (N, T, V) or even (K, V)
  logits exist; optionally on a padding-free packed row (:mod:`lightning_dpo.ops.packing`). Models whose head
  cannot be split off (:mod:`lightning_dpo.ops.causal_lm`) take the reference path.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from lightning_dpo.ops.fused_head import HeadLogps, entropy_from_logits, fused_head_logps
from lightning_dpo.ops.hidden import completion_hidden
from lightning_dpo.ops.moe import sequence_router_sums
from lightning_dpo.ops.packing import TokenLayout, padded_token_owners


class SequenceLogps(NamedTuple):
    """Per-sequence sums over completion tokens; every tensor is ``(N,)``."""

    logps: Tensor
    """Σ log p(token) over completion tokens, as the loss uses it (LD-weighted under ``ld_alpha``); with gradient."""
    num_tokens: Tensor
    """Number of completion tokens."""
    logits_sum: Tensor
    """Σ over completion tokens of the vocabulary-mean logit (detached; for the ``logits/*`` metrics)."""
    raw_logps: Tensor | None = None
    """Plain Σ log p(token), when it differs from ``logps`` (under LD-DPO); the NLL uses it."""
    wpo_log_weights: Tensor | None = None
    """Mean over completion tokens of log p(token) − log Σ_v p_v² (detached), for WPO weights."""
    computed_tokens: Tensor | None = None
    """Tokens each sequence put through the model when the batch ran packed (a shared prompt counts for the
    chosen row); ``None`` when it ran padded, every row T tokens."""
    entropy_sum: Tensor | None = None
    """Σ over completion tokens of the next-token distribution's entropy (detached), with ``with_stats``."""
    top1_count: Tensor | None = None
    """Completion tokens whose target is the model's most likely token, with ``with_stats``."""
    router_assignments: Tensor | None = None
    """(N, E) a mixture-of-experts model's top-k assignments per expert over each sequence's tokens (all of
    them, prompt included) and MoE layers, with ``router``; with the next two, a
    :class:`~lightning_dpo.ops.moe.RouterSums`."""
    router_probabilities: Tensor | None = None
    """(N, E) routing probabilities summed likewise (with gradient)."""
    router_rows: Tensor | None = None
    """(N,) tokens × MoE layers routed per sequence."""


def token_logps(logits: Tensor, input_ids: Tensor, completion_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Per-token log-probs at completion positions, zero elsewhere, and the shifted mask.

    Args:
        logits: (N, T, V) model outputs; computed in fp32 whatever their dtype.
        input_ids: (N, T) token ids.
        completion_mask: (N, T) 1 where the token is a completion token.

    Returns:
        (N, T-1) log p(input_ids[:, t+1] | prefix) and (N, T-1) bool mask of completion targets.
    """
    logits = _at_least_fp32(logits[:, :-1])  # (N, T-1, V): position t predicts token t+1
    labels = input_ids[:, 1:].unsqueeze(-1)  # (N, T-1, 1)
    mask = completion_mask[:, 1:].bool()  # (N, T-1)
    # log_softmax gathered at the label, without materialising a second (N, T-1, V) tensor.
    logps = logits.gather(-1, labels).squeeze(-1) - logits.logsumexp(-1)
    return torch.where(mask, logps, torch.zeros_like(logps)), mask


def _at_least_fp32(x: Tensor) -> Tensor:
    """Log-prob maths in fp32 whatever the model's precision (float64 stays float64)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def _row_sums(x: Tensor) -> Tensor:
    """Σ over the last dimension, accumulated in float64 and returned in ``x``'s dtype: a sequence sums
    hundreds of log-probs, and fp32 accumulation alone would be off by several ulps of the total."""
    return x.sum(-1, dtype=torch.promote_types(x.dtype, torch.float64)).to(x.dtype)


def length_desensitized_sums(per_token: Tensor, mask: Tensor, ld_alpha: float) -> Tensor:
    """LD-DPO (Liu et al. 2024, arXiv 2409.06411): Σ over the first min(|y_w|, |y_l|) completion tokens of
    each pair, plus ``ld_alpha`` × Σ over the longer completion's remaining tokens.

    Args:
        per_token: (2B, T-1) per-token log-probs, zero off the completion; rows are [chosen; rejected].
        mask: (2B, T-1) completion targets.
    """
    position = mask.cumsum(-1)  # (2B, T-1): 1-based index within the completion
    chosen_len, rejected_len = mask.sum(-1).chunk(2)
    shared = torch.minimum(chosen_len, rejected_len).repeat(2).unsqueeze(-1)  # (2B, 1)
    in_shared = mask & (position <= shared)
    shared_sum = _row_sums(torch.where(in_shared, per_token, torch.zeros_like(per_token)))
    return shared_sum + ld_alpha * (_row_sums(per_token) - shared_sum)


def sequence_logps(
    logits: Tensor,
    input_ids: Tensor,
    completion_mask: Tensor,
    *,
    ld_alpha: float | None = None,
    with_wpo: bool = False,
    with_stats: bool = False,
) -> SequenceLogps:
    """Sum the log-probs of the completion tokens of each sequence.

    Args:
        logits: (N, T, V) model outputs; computed in fp32 whatever their dtype.
        input_ids: (N, T) token ids.
        completion_mask: (N, T) 1 where the token is a completion token.
        ld_alpha: LD-DPO's weight of tokens past the shorter completion of each pair (rows [chosen; rejected]).
        with_wpo: Also return the WPO log-weights (one more pass over the vocabulary).
        with_stats: Also return the entropy sums and top-1 counts (the ``entropy`` and ``mean_token_accuracy``
            metrics).
    """
    per_token, mask = token_logps(logits, input_ids, completion_mask)
    raw = _row_sums(per_token)
    shifted = _at_least_fp32(logits[:, :-1])
    with torch.no_grad():
        mean_logits = _row_sums(torch.where(mask, shifted.mean(-1), torch.zeros_like(per_token)))
        wpo = None
        if with_wpo:
            # log Σ_v p_v² = logsumexp(2·z) − 2·logsumexp(z), per position.
            log_sum_sq = (2 * shifted).logsumexp(-1) - 2 * shifted.logsumexp(-1)
            aligned = _row_sums(torch.where(mask, per_token - log_sum_sq, torch.zeros_like(per_token)))
            wpo = aligned / mask.sum(-1).clamp(min=1)
        stats = {}
        if with_stats:
            zeros = torch.zeros_like(per_token)
            stats["entropy_sum"] = _row_sums(torch.where(mask, entropy_from_logits(shifted), zeros))
            stats["top1_count"] = (mask & (shifted.argmax(-1) == input_ids[:, 1:])).sum(-1)
    logps = raw if ld_alpha is None else length_desensitized_sums(per_token, mask, ld_alpha)
    return SequenceLogps(logps, mask.sum(-1), mean_logits, None if ld_alpha is None else raw, wpo, **stats)


@dataclass(frozen=True)
class LogpsOptions:
    """How :func:`completion_logps` computes log-probs: ``model.logps`` on the command line. Every choice gives
    the same values (to fp32 rounding)."""

    fused_head: bool = True
    """The fast path: the decoder body, then the LM head only at completion positions, fused and chunked.
    ``False``: the model's full logits (the reference path)."""
    chunk_size: int | None = None
    """Tokens per block of logits in the fused head; ``None``: about 32M logits (128 MiB of fp32) a block and at
    least 128 tokens, balanced over the batch's completion tokens (``ops.fused_head.auto_chunk_size``)."""
    padding_free: bool | None = None
    """Pack the batch's sequences into one row (fast path only). ``None``: where it pays, i.e. on a CPU with
    ``sdpa`` attention (attention per sequence, no mask) and with flash attention."""
    share_prompt: bool | None = None
    """Pack each pair as prompt + chosen + rejected, so the prompt runs once (fast path, ``sdpa`` only).
    ``None``: on a CPU with ``sdpa`` attention."""


def completion_logps(
    model: nn.Module,
    batch: dict[str, Tensor],
    *,
    options: LogpsOptions = LogpsOptions(),
    ld_alpha: float | None = None,
    with_wpo: bool = False,
    with_stats: bool = False,
    router: tuple[int, int] | None = None,
) -> SequenceLogps:
    """One forward pass of a causal LM over the concatenated batch; returns its :class:`SequenceLogps`.

    ``options`` chooses the fast or the reference path; ``ld_alpha``, ``with_wpo`` and ``with_stats`` are
    LD-DPO's down-weighting, WPO's weights and the entropy / token-accuracy sums (:func:`sequence_logps`);
    ``router`` = (experts, top-k) of a mixture-of-experts model adds its per-sequence router sums.
    """
    fast = (
        completion_hidden(
            model,
            batch,
            padding_free=options.padding_free,
            share_prompt=options.share_prompt,
            router_logits=router is not None,
        )
        if options.fused_head
        else None
    )
    if fast is None:
        extra = {"output_router_logits": True} if router is not None else {}
        outputs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False, **extra)
        out = sequence_logps(
            outputs.logits,
            batch["input_ids"],
            batch["completion_mask"],
            ld_alpha=ld_alpha,
            with_wpo=with_wpo,
            with_stats=with_stats,
        )
        if router is None:
            return out
        tokens, owners = padded_token_owners(batch["attention_mask"])
        return _with_router(out, outputs.router_logits, router, tokens, owners)
    head = fast.parts.head
    out = fused_head_logps(
        fast.hidden,
        head.weight,
        head.bias,
        fast.layout.labels,
        chunk_size=options.chunk_size,
        logit_scale=fast.parts.logit_scale,
        softcap=fast.parts.softcap,
        with_wpo=with_wpo,
        with_stats=with_stats,
    )
    sums = sums_over_sequences(out, fast.layout, ld_alpha=ld_alpha)
    if fast.packed is not None:
        sums = sums._replace(computed_tokens=fast.packed.tokens_per_sequence)
    if router is None:
        return sums
    tokens, owners = fast.packed.token_owners() if fast.packed else padded_token_owners(batch["attention_mask"])
    return _with_router(sums, fast.router_logits, router, tokens, owners)


def _with_router(
    sums: SequenceLogps, router_logits: tuple[Tensor, ...], router: tuple[int, int], tokens: Tensor, owners: Tensor
) -> SequenceLogps:
    experts, top_k = router
    routed = sequence_router_sums(router_logits, experts, top_k, tokens, owners, sums.logps.shape[0])
    return sums._replace(
        router_assignments=routed.assignments, router_probabilities=routed.probabilities, router_rows=routed.rows
    )


def sums_over_sequences(head: HeadLogps, layout: TokenLayout, *, ld_alpha: float | None = None) -> SequenceLogps:
    """Per-token head outputs at the K completion targets -> per-sequence :class:`SequenceLogps`.

    The same sums as :func:`sequence_logps`, over (K,) tokens grouped by ``layout.rows`` instead of over
    (N, T-1) masked rows; LD-DPO's split into each pair's shared prefix uses each token's rank in its
    completion.
    """
    n, rows = layout.num_sequences, layout.rows
    counts = torch.bincount(rows, minlength=n)  # (N,) completion tokens per sequence

    def per_sequence(values: Tensor) -> Tensor:  # (K,) -> (N,), accumulated in float64: sums of ~1e3 tokens
        total = torch.promote_types(values.dtype, torch.float64)
        return values.new_zeros(n, dtype=total).index_add(0, rows, values.to(total)).to(values.dtype)

    raw = per_sequence(head.logps)
    logits_sum = per_sequence(head.mean_logits)
    wpo = None
    if head.log_sum_sq is not None:
        wpo = per_sequence(head.logps.detach() - head.log_sum_sq) / counts.clamp(min=1)
    stats = {}
    if head.entropy is not None:
        stats = {
            "entropy_sum": per_sequence(head.entropy),
            "top1_count": torch.bincount(rows[head.is_top1], minlength=n),
        }
    if ld_alpha is None:
        return SequenceLogps(raw, counts, logits_sum, None, wpo, **stats)
    # LD-DPO: tokens past min(|y_w|, |y_l|) of their pair count with weight ld_alpha.
    starts = counts.cumsum(0) - counts  # (N,) index of each sequence's first token in K order
    rank = torch.arange(rows.shape[0], device=rows.device) - starts[rows]  # (K,) 0-based rank in the completion
    chosen_len, rejected_len = counts.chunk(2)
    shared = torch.minimum(chosen_len, rejected_len).repeat(2)  # (N,)
    one, alpha = head.logps.new_ones(()), head.logps.new_full((), ld_alpha)  # in the log-probs' dtype
    weights = torch.where(rank < shared[rows], one, alpha)  # (K,)
    return SequenceLogps(per_sequence(head.logps * weights), counts, logits_sum, raw, wpo, **stats)
