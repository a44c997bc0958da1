"""The router load-balancing loss of mixture-of-experts models, from per-sequence sums, on any batch layout.

transformers' MoE causal LMs (Mixtral, Qwen2-MoE, OLMoE, ...) add the Switch Transformer auxiliary loss
(Fedus et al. 2021, arXiv 2101.03961, Eqs. 4-6) over the tokens of a batch, its E experts and the L MoE
layers (padding excluded):

    f_e = (1 / (L·T)) Σ_l Σ_t [e ∈ top-k(p_lt)]      fraction of top-k assignments to expert e
    P_e = (1 / (L·T)) Σ_l Σ_t p_lte                   mean routing probability of expert e
    aux = E · Σ_e f_e · P_e

Both means are sums over tokens, so they decompose into per-sequence sums (:class:`RouterSums`, (N, E)),
whatever layout the batch ran in: padded rows, packed rows, or packed with each pair's prompt once (a
shared prompt token then counts for both the chosen and the rejected sequence, as it does padded). Only
``P`` carries a gradient, as in transformers.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn


class RouterSums(NamedTuple):
    """Per-sequence sums over tokens and MoE layers; every tensor has N rows."""

    assignments: Tensor
    """(N, E) top-k assignments to each expert (no gradient)."""
    probabilities: Tensor
    """(N, E) routing probabilities of each expert (with gradient)."""
    rows: Tensor
    """(N,) tokens × MoE layers that were routed."""


def moe_routing(model: nn.Module) -> tuple[int, int] | None:
    """(experts, top-k) of a transformers MoE causal LM (or a PEFT wrapper of one), or ``None`` for a dense model."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    config = getattr(base, "config", None)
    if config is None or not hasattr(config, "output_router_logits"):
        return None
    experts = getattr(base, "num_experts", None) or getattr(config, "num_local_experts", None)
    top_k = getattr(base, "num_experts_per_tok", None) or getattr(config, "num_experts_per_tok", None)
    return (int(experts), int(top_k)) if experts and top_k else None


def token_router_sums(router_logits: Sequence[Tensor], num_experts: int, top_k: int) -> tuple[Tensor, Tensor]:
    """Per token, summed over the MoE layers: (S, E) top-k assignments and (S, E) routing probabilities.

    ``router_logits``: one (S, E) tensor per MoE layer, S tokens in the order the model saw them.
    """
    assignments = probabilities = None
    for logits in router_logits:
        p = torch.softmax(logits.float(), dim=-1)  # (S, E)
        chosen = torch.zeros_like(p).scatter_(1, torch.topk(p, top_k, dim=-1).indices, 1.0)  # (S, E), no grad
        assignments = chosen if assignments is None else assignments + chosen
        probabilities = p if probabilities is None else probabilities + p
    if assignments is None:
        raise ValueError("no router logits: the model returned none for output_router_logits=True")
    return assignments, probabilities


def sequence_router_sums(
    router_logits: Sequence[Tensor], num_experts: int, top_k: int, tokens: Tensor, owners: Tensor, n: int
) -> RouterSums:
    """Fold per-token sums into N sequences: token ``tokens[i]`` (an index into the model's S tokens) counts
    for sequence ``owners[i]``; a token may count for several sequences (a shared prompt) or none (padding)."""
    assignments, probabilities = token_router_sums(router_logits, num_experts, top_k)
    layers = len(router_logits)

    def per_sequence(values: Tensor) -> Tensor:  # (S, E) -> (N, E)
        return values.new_zeros(n, values.shape[1]).index_add(0, owners, values[tokens])

    rows = torch.bincount(owners, minlength=n).to(probabilities.dtype) * layers
    return RouterSums(per_sequence(assignments).detach(), per_sequence(probabilities), rows)


def load_balancing_loss(sums: RouterSums, num_experts: int) -> Tensor:
    """E · Σ_e f_e · P_e over all sequences of ``sums`` (the module docstring)."""
    rows = sums.rows.sum().clamp(min=1)
    fraction = sums.assignments.sum(0) / rows  # (E,)
    probability = sums.probabilities.sum(0) / rows  # (E,)
    return num_experts * (fraction * probability).sum()
