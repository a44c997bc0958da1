"""``AtomicCheckpointIO``: Lightning checkpoints written so that a kill mid-save never costs the previous one,
and read with ``weights_only=True`` whatever the torch version.

Lightning's ``TorchCheckpointIO`` serialises to memory and writes through an ``fsspec`` transaction, whose
temporary file lives in the system temporary directory (``tempfile.mkstemp()``). When that directory is on
another file system than the checkpoints (a node-local ``/tmp`` and a shared checkpoint disk, as on most
clusters), the final step is a copy onto ``last.ckpt``, not a rename: a job killed during the copy leaves a
truncated ``last.ckpt`` and no previous one. This plugin writes the temporary file beside the target, flushes
it to disk and renames it over the target (``os.replace``), so at every instant the target is the old file
or the new one. Remote paths (``s3://``, ...) keep Lightning's own writer.

Loads default to ``weights_only=True`` (a checkpoint carrying pickled code is refused; torch < 2.6 would
otherwise unpickle it), and anything that is not a checkpoint is reported with its path.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path
from typing import Any

import torch

from lightning_dpo import storage
from lightning_dpo.errors import UserError
from lightning_dpo.namespace import submodule

_TorchCheckpointIO = submodule("plugins").TorchCheckpointIO


class UnsafeCheckpointError(UserError, RuntimeError):
    """A checkpoint that does not load with ``weights_only=True``: it carries pickled objects (code)."""


class AtomicCheckpointIO(_TorchCheckpointIO):
    """``TorchCheckpointIO`` with atomic local writes and ``weights_only=True`` reads (see the module docstring).
    Use it with ``trainer.plugins: [lightning_dpo.AtomicCheckpointIO]`` or ``Trainer(plugins=[...])``."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options=storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = storage.staging_path(path)
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        kwargs = {} if map_location is None else {"map_location": map_location}
        try:
            return super().load_checkpoint(path, weights_only=True if weights_only is None else weights_only, **kwargs)
        except pickle.UnpicklingError as e:
            raise UnsafeCheckpointError(refusal(path, e)) from None


def refusal(path: Any, error: BaseException) -> str:
    """One line on a checkpoint that ``weights_only=True`` refused, with torch's reason (the global it met)."""
    lines = [line.strip() for line in str(error).splitlines()]
    reason = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("WeightsUnpickler error")), "")
    reason = reason.split(". Please use")[0] or type(error).__name__
    where = f"the checkpoint {path}" if path is not None else "a checkpoint"
    return (
        f"refusing {where}: it does not load with weights_only=True, so it carries pickled objects that would run "
        f"code ({reason}). Load only checkpoints you made; a lightning_dpo checkpoint holds tensors and primitives"
    )
