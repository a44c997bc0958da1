"""Where reference log-probs come from.

Each way is a small :class:`Reference` strategy, chosen by ``reference_mode``; the module calls its hooks
and never branches on the mode.

- ``frozen``: a frozen copy of the policy, or the model at ``ref_model_name_or_path``.
- ``adapter``: the LoRA policy with its adapter disabled (one copy of the base weights).
- ``none``: reference-free; the loss treats reference log-probs as 0.
- ``auto``: ``frozen`` for losses that use a reference, ``none`` for reference-free losses.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from lightning_dpo.reference.adapter import AdapterReference
from lightning_dpo.reference.base import REFERENCE_MODES, NoReference, Reference, resolve_reference_mode
from lightning_dpo.reference.frozen import FrozenReference, check_same_vocabulary

__all__ = [
    "REFERENCE_MODES",
    "AdapterReference",
    "FrozenReference",
    "NoReference",
    "Reference",
    "check_same_vocabulary",
    "make_reference",
    "resolve_reference_mode",
]


def make_reference(
    mode: str,
    load_separate: Callable[[], nn.Module] | None = None,
    source: str | None = None,
    sync: bool = False,
) -> Reference:
    """The strategy object for a resolved mode (weights are created later, in ``prepare``)."""
    if mode == "none":
        return NoReference(sync)
    if mode == "frozen":
        return FrozenReference(load_separate, source, sync)
    if source is not None:
        raise ValueError(f"ref_model_name_or_path is only used by reference_mode 'frozen', not {mode!r}")
    if mode == "adapter":
        return AdapterReference(sync)
    raise ValueError(f"unresolved reference_mode {mode!r}")
