"""Preference losses as pure functions of sequence log-probs.

Every loss takes four ``(B,)`` tensors -- the policy's and the reference's summed log-probs of the
chosen and rejected completions -- and returns per-pair losses. No model, no batch dict: a loss is
testable with five tensors.

Notation (TRL's): ``h = (log πθ(yw|x) − log πref(yw|x)) − (log πθ(yl|x) − log πref(yl|x))``.
The implicit reward of a completion is ``r(x, y) = β·(log πθ(y|x) − log πref(y|x))``, detached, and is
computed the same way whatever the loss (TRL's convention: rewards use the summed log-probs even for
length-normalised losses such as IPO).

Losses live in one registry, ``LOSSES``; a :class:`LossSpec` declares what a loss needs (a reference,
completion lengths) so the module never branches on a loss name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor


class PreferenceLossOutput(NamedTuple):
    """What :func:`preference_loss` returns; every tensor is ``(B,)``."""

    losses: Tensor
    """Per-pair loss, with gradient. Reduce with ``.mean()``."""
    chosen_rewards: Tensor
    """β·(log πθ(yw|x) − log πref(yw|x)), detached."""
    rejected_rewards: Tensor
    """β·(log πθ(yl|x) − log πref(yl|x)), detached."""


@dataclass(frozen=True)
class LossInputs:
    """Everything a registered loss function may read. Tensors are ``(B,)``."""

    chosen_logratios: Tensor
    """log πθ(yw|x) − log πref(yw|x)."""
    rejected_logratios: Tensor
    """log πθ(yl|x) − log πref(yl|x)."""
    beta: float
    label_smoothing: float = 0.0
    chosen_lengths: Tensor | None = None
    """Number of completion tokens of each chosen completion (EOS included)."""
    rejected_lengths: Tensor | None = None


LossFn = Callable[[LossInputs], Tensor]


@dataclass(frozen=True)
class LossSpec:
    """A registered loss and what it needs from the caller."""

    fn: LossFn
    uses_reference: bool = True
    """False for reference-free losses; ``reference_mode: auto`` then loads no reference model."""
    needs_lengths: bool = False
    """True when the loss reads ``chosen_lengths`` / ``rejected_lengths``."""


LOSSES: dict[str, LossSpec] = {}


def register_loss(name: str, *, uses_reference: bool = True, needs_lengths: bool = False):
    """Decorator: add ``fn(inputs: LossInputs) -> (B,) losses`` to the registry under ``name``."""

    def add(fn: LossFn) -> LossFn:
        if name in LOSSES:
            raise ValueError(f"loss type {name!r} is already registered")
        LOSSES[name] = LossSpec(fn, uses_reference=uses_reference, needs_lengths=needs_lengths)
        return fn

    return add


def get_loss_spec(loss_type: str) -> LossSpec:
    try:
        return LOSSES[loss_type]
    except KeyError:
        known = ", ".join(sorted(LOSSES))
        raise ValueError(f"unknown loss_type {loss_type!r}; registered loss types: {known}") from None


@register_loss("sigmoid")
def sigmoid_loss(x: LossInputs) -> Tensor:
    """DPO (Rafailov et al. 2023, arXiv 2305.18290, Eq. 7): −log σ(β·h).

    With ``label_smoothing`` ε > 0 this is conservative DPO (cDPO, Mitchell 2023): the label is assumed
    flipped with probability ε, giving −(1−ε)·log σ(β·h) − ε·log σ(−β·h).
    """
    h = x.chosen_logratios - x.rejected_logratios
    eps = x.label_smoothing
    return -(1.0 - eps) * F.logsigmoid(x.beta * h) - eps * F.logsigmoid(-x.beta * h)


@register_loss("hinge")
def hinge_loss(x: LossInputs) -> Tensor:
    """Hinge loss on the log-ratio margin, as in SLiC (Zhao et al. 2023, arXiv 2305.10425): max(0, 1 − β·h)."""
    h = x.chosen_logratios - x.rejected_logratios
    return torch.relu(1.0 - x.beta * h)


@register_loss("ipo", needs_lengths=True)
def ipo_loss(x: LossInputs) -> Tensor:
    """IPO (Azar et al. 2023, arXiv 2310.12036, Eq. 17): (h̄ − 1/(2β))², β playing the role of τ.

    h̄ uses per-token averages of the log-ratios (each summed log-ratio divided by its completion's token
    count), TRL's length-normalised form, which the IPO authors confirmed matches their reported results.
    """
    assert x.chosen_lengths is not None and x.rejected_lengths is not None  # guaranteed by preference_loss
    chosen = x.chosen_logratios / x.chosen_lengths.clamp(min=1)
    rejected = x.rejected_logratios / x.rejected_lengths.clamp(min=1)
    return (chosen - rejected - 1.0 / (2.0 * x.beta)) ** 2


def preference_loss(
    policy_chosen_logps: Tensor,
    policy_rejected_logps: Tensor,
    ref_chosen_logps: Tensor | None,
    ref_rejected_logps: Tensor | None,
    *,
    loss_type: str = "sigmoid",
    beta: float = 0.1,
    label_smoothing: float = 0.0,
    chosen_lengths: Tensor | None = None,
    rejected_lengths: Tensor | None = None,
) -> PreferenceLossOutput:
    """Per-pair preference losses and implicit rewards.

    Args:
        policy_chosen_logps: (B,) summed log πθ over each chosen completion's tokens.
        policy_rejected_logps: (B,) same for the rejected completions.
        ref_chosen_logps: (B,) the reference's, or ``None`` for reference-free training (treated as 0).
        ref_rejected_logps: (B,) likewise.
        loss_type: a name registered in ``LOSSES``.
        beta: β, the strength of the implicit KL penalty (τ for IPO).
        label_smoothing: ε of conservative DPO, the assumed probability of a flipped label.
        chosen_lengths: (B,) completion token counts, required by length-normalised losses (``ipo``).
        rejected_lengths: (B,) likewise.
    """
    spec = get_loss_spec(loss_type)
    if spec.needs_lengths and (chosen_lengths is None or rejected_lengths is None):
        raise ValueError(
            f"loss_type {loss_type!r} normalises by completion length: pass chosen_lengths= and "
            "rejected_lengths= (the number of completion tokens of each sequence)"
        )
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must lie in [0, 0.5), got {label_smoothing}")
    if ref_chosen_logps is None or ref_rejected_logps is None:
        ref_chosen_logps = torch.zeros_like(policy_chosen_logps)
        ref_rejected_logps = torch.zeros_like(policy_rejected_logps)

    chosen_logratios = policy_chosen_logps - ref_chosen_logps
    rejected_logratios = policy_rejected_logps - ref_rejected_logps
    inputs = LossInputs(
        chosen_logratios=chosen_logratios,
        rejected_logratios=rejected_logratios,
        beta=beta,
        label_smoothing=label_smoothing,
        chosen_lengths=chosen_lengths,
        rejected_lengths=rejected_lengths,
    )
    return PreferenceLossOutput(
        losses=spec.fn(inputs),
        chosen_rewards=beta * chosen_logratios.detach(),
        rejected_rewards=beta * rejected_logratios.detach(),
    )
