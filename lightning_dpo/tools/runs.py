"""Finding a run on disk: the newest run folder in or below a directory, for ``plot`` and ``evaluate``.

A user may name the run itself (``lightning_logs/version_3``), the logger's folder (``lightning_logs``), the
Trainer's ``default_root_dir`` that holds it, or a folder of named loggers (``runs/beta-0.1/version_0``): up to
three levels below what was given.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

SEARCH_DEPTH = 3
NOT_RUNS = ("hf_model", "checkpoints")
"""Folders a run holds that are never runs themselves (exports and checkpoints), so the search skips them."""


def newest_run_below(path: str | Path, is_run: Callable[[Path], bool], depth: int = SEARCH_DEPTH) -> Path | None:
    """The newest folder below ``path`` (down to ``depth`` levels) for which ``is_run`` holds, or None: the
    highest ``version_N``, and among equal versions the one whose files were written last."""
    runs = [p for p in folders_below(Path(path), depth) if is_run(p)]
    return max(runs, key=run_order) if runs else None


def folders_below(path: Path, depth: int) -> list[Path]:
    """Every folder under ``path`` down to ``depth`` levels, hidden ones, exports and checkpoints skipped."""
    found, level = [], [path]
    for _ in range(depth):
        level = [
            child
            for folder in level
            for child in sorted(folder.iterdir())
            if child.is_dir() and not child.name.startswith(".") and child.name not in NOT_RUNS
        ]
        found += level
    return found


def run_order(run: Path) -> tuple[int, float]:
    """(N of ``version_N``, or -1; the newest modification time of the files directly in ``run``)."""
    version = re.fullmatch(r"version_(\d+)", run.name)
    times = [f.stat().st_mtime for f in run.iterdir() if f.is_file()]
    return (int(version.group(1)) if version else -1, max(times, default=run.stat().st_mtime))
