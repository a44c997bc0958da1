"""The embedded default: a tiny SFT model and a preference data set that ship inside the package.

They are named ``embedded:<name>`` wherever a Hugging Face id or a local path is accepted, so configs
and saved hyperparameters stay portable across machines (no absolute paths).
"""

from __future__ import annotations

from pathlib import Path

PREFIX = "embedded:"
ASSETS = Path(__file__).resolve().parent / "assets"

DEFAULT_MODEL = "embedded:tiny-polite-sft"
"""A ~1.4M-parameter Llama SFT-trained on the bundled task (``scripts/build_tiny_model.py``)."""
DEFAULT_DATASET = "embedded:polite"
"""Polite (chosen) vs rude (rejected) answers to the same question (``scripts/make_polite_data.py``)."""


def is_embedded(name: str) -> bool:
    return name.startswith(PREFIX)


def _resolve(name: str, kind: str) -> str:
    if not is_embedded(name):
        return name
    path = ASSETS / kind / name[len(PREFIX) :]
    if not path.exists():
        available = sorted(p.name for p in (ASSETS / kind).iterdir()) if (ASSETS / kind).exists() else []
        raise FileNotFoundError(f"no embedded {kind[:-1]} {name!r}; available: {available}")
    return str(path)


def resolve_model(name_or_path: str) -> str:
    """``embedded:<name>`` -> the bundled model directory; anything else is returned unchanged."""
    return _resolve(name_or_path, "models")


def resolve_dataset(name_or_path: str) -> str:
    """``embedded:<name>`` -> the bundled data directory; anything else is returned unchanged."""
    return _resolve(name_or_path, "data")
