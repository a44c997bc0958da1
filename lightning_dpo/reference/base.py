"""The reference-strategy interface, the reference-free strategy, and mode resolution."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Callable, Iterator, Sequence

from torch import Tensor, nn

from lightning_dpo.logps import SequenceLogps
from lightning_dpo.losses import LossSpec

REFERENCE_MODES = ("auto", "frozen", "adapter", "precomputed", "none")


class Reference(nn.Module):
    """Where reference log-probs come from. Subclasses hold whatever weights they own as submodules.

    The module calls ``prepare(policy)`` once the policy is loaded (``configure_model``), ``logps(batch)``
    every step, ``before_fit(module)`` once before training, and ``sync(policy, alpha)`` for TR-DPO.
    """

    supports_sync: bool = False
    """Whether TR-DPO (``sync_ref_model``) can update this reference."""

    def __init__(self, sync: bool = False) -> None:
        super().__init__()
        if sync and not self.supports_sync:
            raise ValueError(
                f"sync_ref_model (TR-DPO) updates a reference model, which reference mode "
                f"{type(self).__name__} does not hold; use reference_mode 'frozen' or 'adapter'"
            )
        self.sync_enabled = sync

    @property
    def in_checkpoint(self) -> bool:
        """Whether this strategy's weights belong in training checkpoints: only when TR-DPO has moved them
        away from what the model source rebuilds."""
        return self.sync_enabled

    def keeps(self, key: str) -> bool:
        """Whether this strategy's state lives in a (frozen) policy parameter that checkpoints must keep."""
        return False

    def prepare(self, policy: nn.Module) -> None:
        """Create the reference from the (already built) policy. Must be idempotent."""

    def logps(self, batch: dict[str, Tensor], ld_alpha: float | None = None) -> SequenceLogps | None:
        """Reference log-probs for the concatenated batch, ``(2B,)``, or ``None`` when reference-free.
        ``ld_alpha``: LD-DPO's weighting, applied as to the policy's log-probs."""
        return None

    def shard(self, fn: Callable[[nn.Module], Any]) -> None:
        """Apply ``fn`` (e.g. FSDP2's ``fully_shard``) to each model this strategy owns; none by default."""

    def before_fit(self, module: nn.Module) -> None:
        """Called once when fit starts, after the data is set up (used by ``precomputed``)."""

    def state_for_checkpoint(self) -> dict[str, Any]:
        """Small, primitive state a training checkpoint must carry (e.g. a cache key)."""
        return {}

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        """Restore what ``state_for_checkpoint`` returned."""

    def sync(self, policy: nn.Module, alpha: float) -> None:
        """TR-DPO: reference ← α·policy + (1 − α)·reference."""
        raise NotImplementedError

    @contextmanager
    def as_reference(self) -> Iterator[nn.Module | None]:
        """A model that computes (and generates) as the reference inside the block, or ``None`` when this
        strategy holds no reference model."""
        yield None


class NoReference(Reference):
    """Reference-free training: no reference model; reference log-probs are taken as 0."""


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
