"""Where this package keeps files between runs: the tokenised-data cache and precomputed reference log-probs."""

from __future__ import annotations

import os


def default_cache_dir() -> str:
    """``$LIGHTNING_DPO_CACHE``, else ``$XDG_CACHE_HOME/lightning_dpo``, else ``~/.cache/lightning_dpo``."""
    if os.environ.get("LIGHTNING_DPO_CACHE"):
        return os.environ["LIGHTNING_DPO_CACHE"]
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "lightning_dpo")
