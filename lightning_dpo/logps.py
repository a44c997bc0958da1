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
    """Σ log p(token) over completion tokens; carries the gradient."""
    num_tokens: Tensor
    """Number of completion tokens."""
    logits_sum: Tensor
    """Σ over completion tokens of the vocabulary-mean logit (detached; for the ``logits/*`` metrics)."""


def sequence_logps(logits: Tensor, input_ids: Tensor, completion_mask: Tensor) -> SequenceLogps:
    """Sum the log-probs of the completion tokens of each sequence.

    Args:
        logits: (N, T, V) model outputs; computed in fp32 whatever their dtype.
        input_ids: (N, T) token ids.
        completion_mask: (N, T) 1 where the token is a completion token.
    """
    logits = logits[:, :-1].float()  # (N, T-1, V): position t predicts token t+1
    labels = input_ids[:, 1:].unsqueeze(-1)  # (N, T-1, 1)
    mask = completion_mask[:, 1:].bool()  # (N, T-1)
    # log_softmax gathered at the label, without materialising a second (N, T-1, V) tensor.
    token_logps = logits.gather(-1, labels).squeeze(-1) - logits.logsumexp(-1)  # (N, T-1)
    token_logps = torch.where(mask, token_logps, torch.zeros_like(token_logps))
    with torch.no_grad():
        mean_logits = torch.where(mask, logits.mean(-1), torch.zeros_like(token_logps))
    return SequenceLogps(
        logps=token_logps.sum(-1),
        num_tokens=mask.sum(-1),
        logits_sum=mean_logits.sum(-1),
    )


def completion_logps(model: nn.Module, batch: dict[str, Tensor]) -> SequenceLogps:
    """One forward pass of a causal LM over the concatenated batch; returns its :class:`SequenceLogps`."""
    outputs = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False)
    return sequence_logps(outputs.logits, batch["input_ids"], batch["completion_mask"])
