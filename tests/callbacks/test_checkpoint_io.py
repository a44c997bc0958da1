"""AtomicCheckpointIO against Lightning's own writer, when the system temporary folder is on another file system
than the checkpoints (a node-local /tmp, checkpoints on shared storage): killed mid-save, only the atomic
writer keeps the previous checkpoint loadable."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil

import pytest
import torch

from lightning_dpo import AtomicCheckpointIO
from lightning_dpo.namespace import submodule


@pytest.fixture
def other_filesystem_and_a_kill(monkeypatch):
    """``os.rename`` across file systems fails (EXDEV), so ``shutil.move`` copies; the copy dies halfway."""
    real_rename = os.rename

    def rename(src, dst, *args, **kwargs):
        if os.path.dirname(os.path.abspath(src)) != os.path.dirname(os.path.abspath(dst)):
            raise OSError(errno.EXDEV, "Invalid cross-device link")
        return real_rename(src, dst, *args, **kwargs)

    def copyfile(src, dst, *args, **kwargs):
        with open(src, "rb") as f, open(dst, "wb") as g:
            g.write(f.read()[:100])
        raise KeyboardInterrupt  # the job is killed during the copy

    monkeypatch.setattr(os, "rename", rename)
    monkeypatch.setattr(shutil, "copyfile", copyfile)


@pytest.mark.parametrize("writer", ["lightning", "atomic"])
def test_a_kill_mid_save_keeps_the_previous_checkpoint_only_with_the_atomic_writer(
    tmp_path, writer, request, monkeypatch
):
    io = AtomicCheckpointIO() if writer == "atomic" else submodule("plugins").TorchCheckpointIO()
    target = tmp_path / "ckpt" / "last.ckpt"
    io.save_checkpoint({"global_step": 1, "w": torch.ones(1000)}, target)
    monkeypatch.setenv("TMPDIR", str(tmp_path / "tmp"))  # "another file system" (see the fixture)
    (tmp_path / "tmp").mkdir()
    request.getfixturevalue("other_filesystem_and_a_kill")
    with pytest.raises(KeyboardInterrupt) if writer == "lightning" else contextlib.nullcontext():
        io.save_checkpoint({"global_step": 2, "w": torch.zeros(1000)}, target)
    if writer == "lightning":
        with pytest.raises(
            RuntimeError, match="zip archive"
        ):  # truncated in place: neither the old checkpoint nor the new one
            torch.load(target, weights_only=True)
    else:
        assert io.load_checkpoint(target)["global_step"] == 2  # a rename in one folder: no copy to die in
        assert [p.name for p in target.parent.iterdir()] == ["last.ckpt"]
