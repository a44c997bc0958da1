"""Sequence log-probs of completion tokens.

A batch holds N = 2B sequences (chosen rows first, then rejected), right-padded to length T:

    input_ids        (N, T)  prompt tokens, completion tokens (EOS included when it fits), padding
    attention_mask   (N, T)  1 on prompt + completion tokens
    completion_mask  (N, T)  1 on completion tokens only

Both masks are built by the collator from sequence lengths, never from token ids, so a pad token that
equals EOS cannot hide a real EOS.

The sequence log-prob is Σ_t log πθ(token_t | tokens_<t) over completion positions t; position t's
logits come from the model's output at t−1 (the usual one-step label shift).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn


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
    shared_sum = torch.where(in_shared, per_token, torch.zeros_like(per_token)).sum(-1)
    return shared_sum + ld_alpha * (per_token.sum(-1) - shared_sum)


def sequence_logps(
    logits: Tensor,
    input_ids: Tensor,
    completion_mask: Tensor,
    *,
    ld_alpha: float | None = None,
    with_wpo: bool = False,
) -> SequenceLogps:
    """Sum the log-probs of the completion tokens of each sequence.

    Args:
        logits: (N, T, V) model outputs; computed in fp32 whatever their dtype.
        input_ids: (N, T) token ids.
        completion_mask: (N, T) 1 where the token is a completion token.
        ld_alpha: LD-DPO's weight of tokens past the shorter completion of each pair (rows [chosen; rejected]).
        with_wpo: Also return the WPO log-weights (one more pass over the vocabulary).
    """
    per_token, mask = token_logps(logits, input_ids, completion_mask)
    raw = per_token.sum(-1)
    shifted = _at_least_fp32(logits[:, :-1])
    with torch.no_grad():
        mean_logits = torch.where(mask, shifted.mean(-1), torch.zeros_like(per_token)).sum(-1)
        wpo = None
        if with_wpo:
            # log Σ_v p_v² = logsumexp(2·z) − 2·logsumexp(z), per position.
            log_sum_sq = (2 * shifted).logsumexp(-1) - 2 * shifted.logsumexp(-1)
            aligned = torch.where(mask, per_token - log_sum_sq, torch.zeros_like(per_token)).sum(-1)
            wpo = aligned / mask.sum(-1).clamp(min=1)
    if ld_alpha is None:
        return SequenceLogps(raw, mask.sum(-1), mean_logits, None, wpo)
    return SequenceLogps(length_desensitized_sums(per_token, mask, ld_alpha), mask.sum(-1), mean_logits, raw, wpo)


def completion_logps(
    model: nn.Module, batch: dict[str, Tensor], *, ld_alpha: float | None = None, with_wpo: bool = False
) -> SequenceLogps:
    """One forward pass of a causal LM over the concatenated batch; returns its :class:`SequenceLogps`."""
    outputs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
    return sequence_logps(
        outputs.logits, batch["input_ids"], batch["completion_mask"], ld_alpha=ld_alpha, with_wpo=with_wpo
    )
