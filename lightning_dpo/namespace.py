"""The Lightning namespace this package builds on: ``pytorch_lightning`` or the unified ``lightning.pytorch``.

The two are separate class hierarchies: ``lightning.pytorch.Trainer`` rejects a
``pytorch_lightning.LightningModule`` and the other way round. So ``DPOModule``, ``PreferenceDataModule``,
the callbacks and the CLI subclass one of them, chosen once, when ``lightning_dpo`` is first imported:

1. ``$LIGHTNING_DPO_NAMESPACE``, when set: ``lightning`` or ``pytorch_lightning``;
2. else the one the program has already imported (``import lightning as L`` before ``import lightning_dpo``
   gives ``lightning.pytorch``; both imported, or neither: ``pytorch_lightning``);
3. else ``pytorch_lightning``, the package's own dependency.

Every other module imports Lightning through :data:`pl` (and :func:`submodule`), so nothing else branches on
the namespace.
"""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType

from lightning_utilities.core.imports import RequirementCache

ENV_VAR = "LIGHTNING_DPO_NAMESPACE"
NAMESPACES = {"pytorch_lightning": "pytorch_lightning", "lightning": "lightning.pytorch"}
"""Namespace name -> the module that holds ``LightningModule``, ``Trainer``, ``callbacks``, ``cli``, ..."""
REQUIREMENTS = {"pytorch_lightning": "pytorch-lightning>=2.6.6", "lightning": "lightning>=2.6.6"}
"""The floor for each: earlier releases load crafted checkpoints' code (CVE-2026-58659)."""


def choose_namespace(environ: dict[str, str] | None = None, imported: set[str] | None = None) -> str:
    """The namespace name by the rules of the module docstring (pure: arguments default to the process's)."""
    environ = os.environ if environ is None else environ
    imported = set(sys.modules) if imported is None else imported
    wanted = environ.get(ENV_VAR, "").strip()
    if wanted:
        if wanted not in NAMESPACES:
            raise ValueError(f"{ENV_VAR}={wanted!r}: use one of {sorted(NAMESPACES)}")
        return wanted
    if "lightning" in imported and "pytorch_lightning" not in imported:
        return "lightning"
    return "pytorch_lightning"


def _load(name: str) -> ModuleType:
    available = RequirementCache(REQUIREMENTS[name])
    if not available:
        raise ImportError(f"lightning_dpo runs on the {name!r} namespace, which needs {available.message}")
    return importlib.import_module(NAMESPACES[name])


NAME = choose_namespace()
"""``"pytorch_lightning"`` or ``"lightning"``."""
pl = _load(NAME)
"""``pytorch_lightning``, or ``lightning.pytorch``."""


def submodule(name: str) -> ModuleType:
    """``pl``'s submodule ``name`` (``"cli"``, ``"loggers"``, ``"utilities.warnings"``), imported on first use."""
    return importlib.import_module(f"{pl.__name__}.{name}")
