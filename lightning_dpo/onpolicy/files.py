"""Files that survive a killed process: whole-file writes that are atomic, and append-only logs whose
complete lines are the record of what was done.

(A local helper: ``storage.py`` is getting atomic-write and lock helpers on another branch; these two
functions are meant to move there when the branches meet.)
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def atomic_write(path: str | Path, data: bytes | str) -> None:
    """Write ``data`` to ``path`` so that a reader sees the old file or the whole new one, never a part:
    a temporary file in the same folder, flushed to disk, then renamed over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(raw)
            f.flush()
            os.fsync(f.fileno())
        _publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _publish(tmp: str, path: Path) -> None:
    """Give the temporary file the mode a plain ``open`` would (mkstemp makes it private), then rename it."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, path)


def atomic_write_with(path: str | Path, write: Any) -> None:
    """Like :func:`atomic_write`, for writers that need a file name: ``write(tmp_path)`` fills the
    temporary file (a Parquet writer, gzip), which is then renamed over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        _publish(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def append_lines(stream: Any, records: list[dict[str, Any]]) -> None:
    """Append JSON records to an open binary file in one write, then flush them to disk, so that after a
    kill the file ends with whole records and at most one partial line."""
    if not records:
        return
    stream.write(b"".join(json.dumps(r, ensure_ascii=False).encode("utf-8") + b"\n" for r in records))
    stream.flush()
    os.fsync(stream.fileno())


def complete_records(path: str | Path) -> Iterator[dict[str, Any]]:
    """The whole JSON records of an append-only log; a last line cut by a kill (no newline, or not JSON) is
    not a record."""
    with open(path, "rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                return
            try:
                yield json.loads(raw)
            except json.JSONDecodeError:
                continue
