"""The write and read rules of every on-disk cache: atomic writes, checked reads, one builder at a time."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lightning_dpo import storage


def test_checked_file_round_trips_and_rejects_every_kind_of_damage(tmp_path):
    path = tmp_path / "table.bin"
    payload = bytes(range(256)) * 40
    storage.write_checked(path, payload, "table")
    assert storage.read_checked(path, "table") == payload
    good = path.read_bytes()
    header_end = good.index(b"\n") + 1

    damaged = {
        "truncated": good[: header_end + 100],
        "extended": good + b"\0",
        "garbled": good[:-10] + bytes(b ^ 0xFF for b in good[-10:]),
        "no header": payload,
        "empty": b"",
        "garbled header": good.replace(b"bytes=", b"bytes=x", 1),
    }
    for name, data in damaged.items():
        path.write_bytes(data)
        with pytest.raises(storage.CorruptFile) as error:
            storage.read_checked(path, "table")
        assert str(path) in str(error.value), name
    path.write_bytes(good)
    with pytest.raises(storage.CorruptFile, match="not 'other'"):  # a file of another kind
        storage.read_checked(path, "other")
    with pytest.raises(FileNotFoundError):
        storage.read_checked(tmp_path / "absent", "table")


def _populate(directory):
    (directory / "sub").mkdir(parents=True)
    (directory / "a.arrow").write_bytes(os.urandom(3000))
    (directory / "sub" / "b.json").write_text('{"x": 1}')


def test_manifest_catches_truncation_garbling_loss_and_foreign_entries(tmp_path):
    entry = tmp_path / "key1"
    _populate(entry)
    storage.write_manifest(entry, "key1")
    storage.verify_manifest(entry, "key1")
    manifest = json.loads((entry / storage.MANIFEST).read_text())
    assert set(manifest["files"]) == {"a.arrow", "sub/b.json"}

    original = (entry / "a.arrow").read_bytes()
    cases = [
        (lambda: (entry / "a.arrow").write_bytes(original[:1000]), "truncated"),
        (lambda: (entry / "a.arrow").write_bytes(original[:-1] + bytes([original[-1] ^ 1])), "garbled"),
        (lambda: (entry / "a.arrow").unlink(), "missing"),
        (lambda: (entry / storage.MANIFEST).write_text("{not json"), "unreadable"),
        (lambda: (entry / storage.MANIFEST).unlink(), "no manifest"),
    ]
    for damage, reason in cases:
        damage()
        with pytest.raises(storage.CorruptFile, match=reason):
            storage.verify_manifest(entry, "key1")
        (entry / "a.arrow").write_bytes(original)
        storage.write_manifest(entry, "key1")
    with pytest.raises(storage.CorruptFile, match="foreign"):
        storage.verify_manifest(entry, "key2")  # a whole entry copied under another key's name


def test_atomic_write_leaves_the_old_file_when_the_write_fails(tmp_path, monkeypatch):
    path = tmp_path / "f"
    storage.atomic_write(path, b"old")

    def crash(fd):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        storage.atomic_write(path, b"new, half written")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]  # no temporary left behind


def test_a_writer_that_needs_a_file_name_fails_without_touching_the_old_file(tmp_path):
    path = tmp_path / "f"
    storage.atomic_write_with(path, lambda name: Path(name).write_bytes(b"old"))

    def half_then_crash(name):
        Path(name).write_bytes(b"new, half")
        raise RuntimeError("the Parquet writer failed")

    with pytest.raises(RuntimeError, match="Parquet writer failed"):
        storage.atomic_write_with(path, half_then_crash)
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_publish_directory_first_writer_wins_and_replace_swaps(tmp_path):
    final = tmp_path / "entry"
    for content in ("first", "second"):
        staging = storage.staging_path(final)
        staging.mkdir()
        (staging / "x").write_text(content)
        published = storage.publish_directory(staging, final)
        assert published == (content == "first")
        assert not staging.exists()
    assert (final / "x").read_text() == "first"
    staging = storage.staging_path(final)
    staging.mkdir()
    (staging / "x").write_text("third")
    assert storage.publish_directory(staging, final, replace=True)
    assert (final / "x").read_text() == "third"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry"]


HOLDER = """
import sys, time, filelock
lock = filelock.FileLock(sys.argv[1])
lock.acquire()
print("held", flush=True)
time.sleep(1.0)
open(sys.argv[2], "w").close()  # the mark of having let go, made while still holding the lock
lock.release()
"""


def test_build_lock_serialises_processes(tmp_path):
    path = tmp_path / ".locks" / "k.lock"
    path.parent.mkdir()
    released = tmp_path / "released"
    other = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path), str(released)], stdout=subprocess.PIPE, text=True
    )
    assert other.stdout.readline().strip() == "held"
    with storage.build_lock(path) as held:
        after_the_other = released.exists()
    other.wait(30)
    assert held and after_the_other  # this process got in only after the other let go


def test_build_lock_where_no_lock_can_be_made_runs_unlocked(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with storage.build_lock(blocker / "sub" / "k.lock") as held:  # unwritable: the cache write will say so
        assert held is False
    import filelock

    def no_locks(self, *args, **kwargs):
        raise OSError(errno.ENOLCK, "No locks available")  # a network file system without flock

    monkeypatch.setattr(filelock.FileLock, "acquire", no_locks)
    with pytest.warns(UserWarning, match="cannot lock .* building without a lock"):
        with storage.build_lock(tmp_path / "k.lock") as held:
            assert held is False
