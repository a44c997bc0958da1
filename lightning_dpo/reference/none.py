"""``none``: reference-free training; the loss takes reference log-probs as 0."""

from __future__ import annotations

from lightning_dpo.reference.base import Reference, register_reference


@register_reference("none")
class NoReference(Reference):
    """No reference model; :meth:`logps` returns ``None``."""
