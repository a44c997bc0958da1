"""Where reference log-probs come from: one small :class:`Reference` strategy per mode, in a registry.

- ``frozen``: a frozen copy of the policy, or the model at ``reference.model_name_or_path``.
- ``adapter``: the LoRA policy with its adapter disabled (one copy of the base weights).
- ``precomputed``: log-probs computed in one pass before training and cached on disk; no model kept.
- ``none``: reference-free; the loss treats reference log-probs as 0.
- ``auto``: ``frozen`` for losses that use a reference, ``none`` for reference-free losses.

Each mode registers itself (``@register_reference``) in its own module, which this package imports.
"""

from lightning_dpo.reference.adapter import AdapterReference
from lightning_dpo.reference.base import (
    REFERENCES,
    Reference,
    ReferenceSettings,
    make_reference,
    register_reference,
    resolve_reference_mode,
)
from lightning_dpo.reference.frozen import FrozenReference, check_same_vocabulary
from lightning_dpo.reference.none import NoReference
from lightning_dpo.reference.precomputed import PairSource, PrecomputedReference

__all__ = [
    "REFERENCES",
    "AdapterReference",
    "FrozenReference",
    "NoReference",
    "PairSource",
    "PrecomputedReference",
    "Reference",
    "ReferenceSettings",
    "check_same_vocabulary",
    "make_reference",
    "register_reference",
    "resolve_reference_mode",
]
