"""Where reference log-probs come from.

Each way is a small :class:`Reference` strategy, chosen by ``reference_mode``; the module only calls
``build(policy)`` once and ``logps(batch)`` per step, never branching on the mode.

- ``frozen``: a frozen copy of the policy, or the model at ``ref_model_name_or_path``.
- ``none``: reference-free; the loss treats reference log-probs as 0.
- ``auto``: ``frozen`` for losses that use a reference, ``none`` for reference-free losses.
"""

from __future__ import annotations

import copy
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from lightning_dpo.logps import SequenceLogps, completion_logps
from lightning_dpo.losses import LossSpec
from lightning_dpo.models import vocab_size


class Reference(nn.Module):
    """Base strategy. Subclasses hold whatever weights they need as submodules."""

    in_checkpoint: bool = False
    """Whether this strategy's weights belong in training checkpoints (they don't when the model source
    can rebuild them)."""

    def build(self, policy: nn.Module) -> None:
        """Create the reference from the (already built) policy. Must be idempotent."""

    def logps(self, batch: dict[str, Tensor], ld_alpha: float | None = None) -> SequenceLogps | None:
        """Reference log-probs for the concatenated batch, ``(2B,)``, or ``None`` when reference-free.
        ``ld_alpha``: LD-DPO's weighting, applied as to the policy's log-probs."""
        return None


class NoReference(Reference):
    """Reference-free training: no reference model, reference log-probs are taken as 0."""


class FrozenReference(Reference):
    """A frozen model: a deep copy of the policy at build time, or a separately loaded model.

    It stays in eval mode (``train()`` cannot switch it back), has ``requires_grad=False`` everywhere so it
    gets no gradients and no optimizer state, and runs under ``torch.no_grad``.
    """

    def __init__(self, load_separate: Callable[[], nn.Module] | None = None, source: str | None = None) -> None:
        super().__init__()
        self._load_separate = load_separate
        self._source = source
        self.model: nn.Module | None = None

    def build(self, policy: nn.Module) -> None:
        if self.model is not None:
            return
        if self._load_separate is None:
            model = copy.deepcopy(policy)
        else:
            model = self._load_separate()
            check_same_vocabulary(policy, model, self._source)
        model.requires_grad_(False)
        self.model = model
        self.train(False)

    def train(self, mode: bool = True) -> FrozenReference:
        return super().train(False)

    @torch.no_grad()
    def logps(self, batch: dict[str, Tensor], ld_alpha: float | None = None) -> SequenceLogps:
        assert self.model is not None, "FrozenReference.build() was not called (DPOModule.configure_model)"
        return completion_logps(self.model, batch, ld_alpha=ld_alpha)


def check_same_vocabulary(policy: nn.Module, reference: nn.Module, source: str | None) -> None:
    """DPO compares log-probs of the same token ids under both models: their vocabularies must match."""
    policy_vocab, reference_vocab = vocab_size(policy), vocab_size(reference)
    if policy_vocab != reference_vocab:
        raise ValueError(
            f"reference model {source!r} has a vocabulary of {reference_vocab} tokens but the policy has "
            f"{policy_vocab}: DPO compares the log-probs of the same token ids under both models, so they must "
            "share a tokenizer. Use a reference from the same model family, or leave ref_model_name_or_path unset "
            "to copy the policy."
        )


REFERENCE_MODES = ("auto", "frozen", "none")


def resolve_reference_mode(mode: str, losses: Sequence[LossSpec], loss_type: object) -> str:
    """Turn ``auto`` into a concrete mode and reject combinations that make no sense.

    A combination of losses needs a reference when any of them does; it is reference-free only when all are.
    """
    if mode not in REFERENCE_MODES:
        raise ValueError(f"reference_mode must be one of {REFERENCE_MODES}, got {mode!r}")
    uses_reference = any(spec.uses_reference for spec in losses)
    if mode == "auto":
        return "frozen" if uses_reference else "none"
    if mode != "none" and not uses_reference:
        raise ValueError(
            f"loss_type {loss_type!r} is reference-free but reference_mode={mode!r} asks for a reference model; "
            "use reference_mode 'auto' or 'none'"
        )
    return mode


def make_reference(mode: str, load_separate: Callable[[], nn.Module] | None, source: str | None) -> Reference:
    """Build the strategy object for a resolved mode (weights are created later, in ``build``)."""
    if mode == "none":
        return NoReference()
    if mode == "frozen":
        return FrozenReference(load_separate, source)
    raise ValueError(f"unresolved reference_mode {mode!r}")
