"""Which split validates, and the seeded validation carve-out, shared by every data module.

A source with no validation split gives up ``val_size`` of its train records: a fraction (< 1) or a count,
drawn with ``random.Random(seed)`` so every rank and every rerun carves the same records.
"""

from __future__ import annotations

import random
from collections.abc import Container

from lightning_dpo.data.sources import VALIDATION_SPLIT_NAMES


def find_validation(splits: Container[str]) -> str | None:
    """The first of ``VALIDATION_SPLIT_NAMES`` ("validation", "val", ...) that ``splits`` has, else None."""
    return next((name for name in VALIDATION_SPLIT_NAMES if name in splits), None)


def carve_indices(n: int, val_size: float, seed: int, unit: str = "records") -> tuple[list[int], list[int]]:
    """(train rows, validation rows) of ``n`` rows, each ascending; ``unit`` names the rows in the error."""
    n_val = round(val_size * n) if val_size < 1 else int(val_size)
    if not 0 < n_val < n:
        raise ValueError(f"val_size={val_size} leaves no train or no validation {unit} out of {n}")
    order = list(range(n))
    random.Random(seed).shuffle(order)
    return sorted(order[n_val:]), sorted(order[:n_val])
