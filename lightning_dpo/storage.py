"""Where this package keeps files between runs, and how it writes and reads them so that a crash, a bad disk
or a second run on the same directory can never make a run train on a wrong file.

The tokenised-data cache (``data/cache.py``) and the precomputed reference log-probs
(``reference/precomputed.py``) live under :func:`default_cache_dir` and are reused across runs. Both follow
three rules, with the helpers here:

- **Atomic writes.** A file is written beside its final name and renamed into place (:func:`atomic_write`);
  a directory is built under a staging name and renamed (:func:`publish_directory`). A reader sees the old
  file, the new one, or none; never half of one.
- **Checked reads.** A single file carries a header with its length and sha256 (:func:`write_checked`,
  :func:`read_checked`); a directory carries ``manifest.json`` with every file's size and sha256 and the key
  it was made for (:func:`write_manifest`, :func:`verify_manifest`). A truncated, garbled or foreign file
  raises :class:`CorruptFile`; callers report it, rebuild, and never use it.
- **One builder at a time.** :func:`build_lock` serialises processes that would build the same entry (two
  ``fit`` runs started together): the second waits, then finds the first one's result. The lock only saves
  work; the atomic publish alone keeps concurrent writers correct (where locks do not work, as on some
  network file systems, the lock is skipped with a warning).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

MANIFEST = "manifest.json"
_UNWRITABLE = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR}
LOCK_TIMEOUT_S = 3600.0
"""How long a process waits for another to finish building the same cache entry, before building it too."""


def default_cache_dir() -> str:
    """``$LIGHTNING_DPO_CACHE``, else ``$XDG_CACHE_HOME/lightning_dpo``, else ``~/.cache/lightning_dpo``."""
    if os.environ.get("LIGHTNING_DPO_CACHE"):
        return os.environ["LIGHTNING_DPO_CACHE"]
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "lightning_dpo")


class CorruptFile(Exception):
    """A cache file or directory that is truncated, garbled, or not the one expected (``reason`` says which)."""

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path, self.reason = str(path), reason
        super().__init__(f"{path}: {reason}")


# -- writing ---------------------------------------------------------------------------------------------


def staging_path(final: str | os.PathLike, suffix: str = "tmp") -> Path:
    """A unique hidden name beside ``final`` (same directory, so same file system: the rename is atomic)."""
    final = Path(final)
    return final.parent / f".{final.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.{suffix}"


@contextmanager
def staged_file(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary file name beside ``path`` to write; on leaving the block the file is flushed to disk and
    renamed over ``path``, so readers see the old file or the whole new one. On an error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = staging_path(path)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, data: bytes | Callable[[BinaryIO], object]) -> None:
    """Write ``data`` to ``path`` through :func:`staged_file`. ``data`` is the bytes, or a function that writes
    them to the open file (``torch.save`` of a checkpoint, say)."""
    with staged_file(path) as tmp, open(tmp, "wb") as f:
        if callable(data):
            data(f)
        else:
            f.write(data)


def atomic_write_with(path: str | os.PathLike, write: Callable[[str], object]) -> None:
    """Like :func:`atomic_write`, for writers that need a file name (a Parquet writer, gzip): ``write(tmp)``
    fills the staged file."""
    with staged_file(path) as tmp:
        write(str(tmp))


def append_records(stream: BinaryIO, records: list[dict[str, Any]]) -> None:
    """Append JSON records to an open binary file in one write, then flush them to disk: after a kill the
    file ends with whole records and at most one partial line (which :func:`complete_records` ignores)."""
    if not records:
        return
    stream.write(b"".join(json.dumps(r, ensure_ascii=False).encode("utf-8") + b"\n" for r in records))
    stream.flush()
    os.fsync(stream.fileno())


def complete_records(path: str | os.PathLike) -> Iterator[dict[str, Any]]:
    """The whole JSON records of an append-only log (:func:`append_records`); a last line that a kill cut
    short (no newline, or not JSON) is not a record."""
    with open(path, "rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                return
            try:
                yield json.loads(raw)
            except json.JSONDecodeError:
                continue


def publish_directory(staging: str | os.PathLike, final: str | os.PathLike, replace: bool = False) -> bool:
    """Rename the complete directory ``staging`` to ``final``; True when it was published.

    When ``final`` already exists: with ``replace``, the old one is moved aside first and then deleted (at no
    moment is a half-written ``final`` visible; a crash between the two renames leaves no ``final`` and the
    complete new directory under its staging name); without, another writer got there first, so ``staging`` is
    deleted and False returned.
    """
    staging, final = Path(staging), Path(final)
    if replace and final.exists():
        old = staging_path(final, "old")
        os.rename(final, old)
        os.rename(staging, final)
        shutil.rmtree(old, ignore_errors=True)
        return True
    try:
        os.rename(staging, final)
        return True
    except OSError:
        if not final.exists():
            raise
        shutil.rmtree(staging, ignore_errors=True)  # theirs holds the same content: keep it
        return False


def discard(path: str | os.PathLike) -> None:
    """Remove a bad cache entry: renamed away first (so its name is free at once), then deleted. Another
    process that removed it already is not an error."""
    path = Path(path)
    aside = staging_path(path, "corrupt")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return
    if aside.is_dir():
        shutil.rmtree(aside, ignore_errors=True)
    else:
        aside.unlink(missing_ok=True)


# -- checksums -------------------------------------------------------------------------------------------


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _files(directory: Path) -> list[str]:
    return sorted(
        p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file() and p.name != MANIFEST
    )


def write_manifest(directory: str | os.PathLike, key: str) -> None:
    """Write ``manifest.json`` into ``directory``: the ``key`` it was built for and every file's size and sha256."""
    directory = Path(directory)
    files = {
        name: {"bytes": (directory / name).stat().st_size, "sha256": file_sha256(directory / name)}
        for name in _files(directory)
    }
    atomic_write(directory / MANIFEST, json.dumps({"key": key, "files": files}, indent=1, sort_keys=True).encode())


def verify_manifest(directory: str | os.PathLike, key: str) -> None:
    """Raise :class:`CorruptFile` unless every file that ``directory``'s manifest lists is there, whole and
    unchanged, and the manifest names ``key``."""
    directory = Path(directory)
    try:
        manifest = json.loads((directory / MANIFEST).read_bytes())
        files = manifest["files"]
        if not isinstance(files, dict) or not files:
            raise ValueError("it lists no files")
    except FileNotFoundError:
        raise CorruptFile(directory, f"no {MANIFEST} (an interrupted or foreign write)") from None
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise CorruptFile(directory, f"{MANIFEST} is unreadable ({e})") from None
    if manifest.get("key") != key:
        raise CorruptFile(directory, f"{MANIFEST} is for key {manifest.get('key')!r}, not {key!r} (a foreign entry)")
    for name, expected in sorted(files.items()):
        path = directory / name
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            raise CorruptFile(path, "missing") from None
        if size != expected.get("bytes"):
            raise CorruptFile(path, f"{size} bytes, expected {expected.get('bytes')} (truncated or overwritten)")
        if file_sha256(path) != expected.get("sha256"):
            raise CorruptFile(path, "its sha256 does not match the manifest (garbled)")


_MAGIC = b"lightning_dpo"


def write_checked(path: str | os.PathLike, payload: bytes, kind: str) -> None:
    """Atomically write ``payload`` after a one-line header that names its ``kind``, length and sha256."""
    header = b"%s %s bytes=%d sha256=%s\n" % (
        _MAGIC,
        kind.encode(),
        len(payload),
        hashlib.sha256(payload).hexdigest().encode(),
    )
    atomic_write(path, header + payload)


def read_checked(path: str | os.PathLike, kind: str) -> bytes:
    """The payload of a file written by :func:`write_checked`; :class:`CorruptFile` when it is not one of
    ``kind``, or is truncated, extended or garbled. ``FileNotFoundError`` when there is no file."""
    with open(path, "rb") as f:
        header = f.readline(512)
        payload = f.read()
    parts = header.rstrip(b"\n").split(b" ")
    if len(parts) != 4 or parts[0] != _MAGIC or not header.endswith(b"\n"):
        raise CorruptFile(path, f"not a lightning_dpo {kind} file (no header)")
    if parts[1].decode(errors="replace") != kind:
        raise CorruptFile(path, f"a {parts[1].decode(errors='replace')!r} file, not {kind!r}")
    try:
        size = int(parts[2].removeprefix(b"bytes="))
        digest = parts[3].removeprefix(b"sha256=").decode()
    except ValueError:
        raise CorruptFile(path, "its header is garbled") from None
    if len(payload) != size:
        raise CorruptFile(path, f"{len(payload)} bytes of payload, expected {size} (truncated or overwritten)")
    if hashlib.sha256(payload).hexdigest() != digest:
        raise CorruptFile(path, "its sha256 does not match its header (garbled)")
    return payload


# -- locking ---------------------------------------------------------------------------------------------


@contextmanager
def build_lock(path: str | os.PathLike, timeout: float = LOCK_TIMEOUT_S) -> Iterator[bool]:
    """Hold an inter-process lock on ``path`` (a ``filelock`` file) for the block; yields whether it is held.

    When the lock cannot be made (a lock-less file system; an unwritable directory, which the write that follows
    reports) or another holder keeps it past ``timeout`` seconds, the block runs unlocked, after a warning:
    callers publish atomically, so that is safe.
    """
    from filelock import FileLock, Timeout

    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(path), timeout=timeout)
        lock.acquire()
    except Timeout:
        warnings.warn(f"waited {timeout:.0f} s for the lock {path}; building without it", stacklevel=3)
        yield False
        return
    except OSError as e:
        if e.errno not in _UNWRITABLE:  # an unwritable cache is reported by the write that follows
            warnings.warn(f"cannot lock {path} ({e}); building without a lock", stacklevel=3)
        yield False
        return
    try:
        yield True
    finally:
        lock.release()
