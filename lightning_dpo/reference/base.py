"""The reference-strategy interface, its settings, and the registry of modes.

A mode is a :class:`Reference` subclass registered under its name with :func:`register_reference`; the
module builds the one ``ReferenceSettings.mode`` names and calls its hooks, never branching on the mode.
A new mode is one new file in this package (imported by its ``__init__``).

Hook order, as :class:`~lightning_dpo.DPOModule` calls them:

1. ``build(settings, load, policy_source)`` in ``DPOModule.__init__``: no weights yet;
2. ``prepare(policy)`` in ``configure_model``, once the policy is loaded; then ``shard(fn)`` under FSDP2;
3. ``before_fit(trainer, policy, options, ld_alpha)`` when fit starts, after the data is set up;
4. ``logps(batch, options, ld_alpha)`` every step; ``sync(policy, alpha)`` every TR-DPO period;
5. ``state_for_checkpoint()`` / ``load_checkpoint_state(state)`` with every checkpoint.

``as_reference()`` yields the model that computes and generates as the reference (samples, evaluation).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from torch import Tensor, nn

from lightning_dpo.logps import LogpsOptions, SequenceLogps
from lightning_dpo.losses import LossSettings

AUTO = "auto"


@dataclass(frozen=True)
class ReferenceSettings:
    """Where reference log-probs come from: ``model.reference`` on the command line and in YAML."""

    mode: str = AUTO
    """``auto`` (``frozen`` for losses that use a reference, ``none`` for reference-free ones), or a registered
    mode: ``frozen`` (a frozen copy), ``adapter`` (the LoRA policy with its adapter disabled; needs
    ``model.lora``), ``precomputed`` (computed once before training, cached on disk, no model kept), ``none``
    (reference-free)."""
    model_name_or_path: str | None = None
    """A separate reference model (same vocabulary), for ``frozen`` and ``precomputed``. ``None``: the policy
    as loaded."""
    sync: bool = False
    """TR-DPO (TRL's ``sync_ref_model``): move the reference towards the policy every ``sync_steps``."""
    mixup_alpha: float = 0.6
    """TR-DPO's α (TRL's ``ref_model_mixup_alpha``): reference ← α·policy + (1 − α)·reference; 1 is a hard
    update."""
    sync_steps: int = 512
    """TR-DPO's period in optimizer steps (TRL's ``ref_model_sync_steps``)."""
    cache_dir: str | None = None
    """Where ``precomputed`` caches reference log-probs. ``None``: ``reference_logps/`` in the data cache
    directory."""
    precompute_batch_size: int = 8
    """Pairs per forward pass when precomputing reference log-probs."""
    dtype: str | None = None
    """The ``frozen`` reference's weight dtype: ``None`` (as loaded, the policy's), or ``bfloat16`` (half its
    memory). On a GPU it then computes in bf16; on a CPU its weights are stored in bf16 and computed in fp32
    module by module (AVX2 CPUs have no fast bf16 matmul). Log-prob maths stay in fp32 either way; the
    reference's log-probs move by the rounding of its weights (measured in docs/performance.md, "Memory options")."""


class Reference(nn.Module):
    """Where reference log-probs come from. Subclasses hold whatever weights they own as submodules."""

    name: str = ""
    """The registered mode name (set by :func:`register_reference`)."""
    supports_sync: bool = False
    """Whether TR-DPO (``sync``) can update this reference."""
    loads_separate_model: bool = False
    """Whether ``settings.model_name_or_path`` (a separate reference model) means anything to this mode."""
    supports_dtype: bool = False
    """Whether this mode holds a model whose weights ``settings.dtype`` can narrow."""

    def __init__(self, sync: bool = False) -> None:
        super().__init__()
        if sync and not self.supports_sync:
            raise ValueError(
                f"reference.sync (TR-DPO) updates a reference model, which reference mode {self.name!r} does not "
                "hold; use reference mode 'frozen' or 'adapter'"
            )
        self.sync_enabled = sync

    @classmethod
    def build(cls, settings: ReferenceSettings, load: Callable[[str], nn.Module], policy_source: str) -> Reference:
        """The strategy for ``settings`` (weights come later, in ``prepare``). ``load(name_or_path)`` loads a
        model as the policy is loaded; ``policy_source`` is the policy's own source."""
        return cls(settings.sync)

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

    def logps(
        self, batch: dict[str, Tensor], options: LogpsOptions, ld_alpha: float | None = None
    ) -> SequenceLogps | None:
        """Reference log-probs for the concatenated batch, ``(2B,)``, or ``None`` when reference-free;
        computed with the policy's ``options`` and LD-DPO's ``ld_alpha``."""
        return None

    def shard(self, fn: Callable[[nn.Module], Any]) -> None:
        """Apply ``fn`` (e.g. FSDP2's ``fully_shard``) to each model this strategy owns; none by default."""

    def before_fit(self, trainer: Any, policy: nn.Module, options: LogpsOptions, ld_alpha: float | None) -> None:
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


REFERENCES: dict[str, type[Reference]] = {}
"""Registered reference modes by name."""


def register_reference(name: str) -> Callable[[type[Reference]], type[Reference]]:
    """Class decorator: register a :class:`Reference` subclass as mode ``name``."""

    def add(cls: type[Reference]) -> type[Reference]:
        if name in REFERENCES or name == AUTO:
            raise ValueError(f"reference mode {name!r} is already registered")
        cls.name = name
        REFERENCES[name] = cls
        return cls

    return add


def resolve_reference_mode(mode: str, loss: LossSettings) -> str:
    """Turn ``auto`` into a concrete mode and reject combinations that make no sense.

    A combination of losses needs a reference when any of them does; it is reference-free only when all are.
    """
    if mode != AUTO and mode not in REFERENCES:
        raise ValueError(f"reference mode must be {AUTO!r} or one of {sorted(REFERENCES)}, got {mode!r}")
    if mode == AUTO:
        return "frozen" if loss.uses_reference else "none"
    if mode != "none" and not loss.uses_reference:
        raise ValueError(
            f"loss type {loss.type!r} is reference-free but reference mode {mode!r} asks for a reference model; "
            "use reference mode 'auto' or 'none'"
        )
    return mode


def make_reference(
    settings: ReferenceSettings, loss: LossSettings, load: Callable[[str], nn.Module], policy_source: str
) -> Reference:
    """The registered strategy for ``settings.mode`` (``auto`` resolved against the loss)."""
    cls = REFERENCES[resolve_reference_mode(settings.mode, loss)]
    if settings.model_name_or_path is not None and not cls.loads_separate_model:
        raise ValueError(f"reference.model_name_or_path is not used by reference mode {cls.name!r}")
    if settings.dtype is not None and not cls.supports_dtype:
        raise ValueError(
            f"reference.dtype narrows a frozen reference model's weights, which reference mode {cls.name!r} does "
            "not hold; use reference mode 'frozen' or leave reference.dtype unset"
        )
    return cls.build(settings, load, policy_source)
