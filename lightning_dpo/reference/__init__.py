"""Where reference log-probs come from.

Each way is a small :class:`Reference` strategy, chosen by ``reference_mode``; the module calls its hooks
and never branches on the mode.

- ``frozen``: a frozen copy of the policy, or the model at ``ref_model_name_or_path``.
- ``adapter``: the LoRA policy with its adapter disabled (one copy of the base weights).
- ``precomputed``: log-probs computed in one pass before training and cached on disk; no model kept.
- ``none``: reference-free; the loss treats reference log-probs as 0.
- ``auto``: ``frozen`` for losses that use a reference, ``none`` for reference-free losses.
"""

from __future__ import annotations

from functools import partial
from typing import Callable

from torch import nn

from lightning_dpo.reference.adapter import AdapterReference
from lightning_dpo.reference.base import REFERENCE_MODES, NoReference, Reference, resolve_reference_mode
from lightning_dpo.reference.frozen import FrozenReference, check_same_vocabulary
from lightning_dpo.reference.precomputed import PrecomputedReference

__all__ = [
    "REFERENCE_MODES",
    "AdapterReference",
    "FrozenReference",
    "NoReference",
    "PrecomputedReference",
    "Reference",
    "check_same_vocabulary",
    "make_reference",
    "resolve_reference_mode",
]


def make_reference(
    mode: str,
    load: Callable[[str], nn.Module],
    model_source: str,
    ref_source: str | None = None,
    sync: bool = False,
    cache_dir: str | None = None,
    precompute_batch_size: int = 8,
) -> Reference:
    """The strategy object for a resolved mode (weights are created later, in ``prepare``).

    ``load(name_or_path)`` loads a model as the policy is loaded; ``model_source`` is the policy's source,
    ``ref_source`` a separate reference's.
    """
    if mode == "none":
        return NoReference(sync)
    if mode == "frozen":
        return FrozenReference(
            partial(load, ref_source) if ref_source else None, ref_source, sync, reload=partial(load, model_source)
        )
    if mode == "precomputed":
        if sync:
            raise ValueError("sync_ref_model (TR-DPO) changes the reference during training, which precomputed "
                             "reference log-probs cannot follow; use reference_mode 'frozen' or 'adapter'")
        return PrecomputedReference(
            partial(load, ref_source or model_source), ref_source is not None, cache_dir, precompute_batch_size
        )
    if ref_source is not None:
        raise ValueError(f"ref_model_name_or_path is not used by reference_mode {mode!r}")
    if mode == "adapter":
        return AdapterReference(sync)
    raise ValueError(f"unresolved reference_mode {mode!r}")
