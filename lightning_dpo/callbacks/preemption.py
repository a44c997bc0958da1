"""``PreemptionCheckpoint``: when a cluster preempts the run with SIGTERM, leave a checkpoint that resumes
exactly.

Lightning already turns SIGTERM into an orderly stop (``_SignalConnector``): its handler only sets
``trainer.received_sigterm``; the loop finishes the batch in progress, optimizer step included, and then
raises ``SIGTERMException`` (a ``SystemExit``), and under DDP rank 0's signal is broadcast so that every rank
stops after the same batch. Under SLURM with ``auto_requeue`` the SIGTERM that comes before the kill is
handled the same way. What Lightning does not do is save anything: a run preempted between two
``ModelCheckpoint`` saves loses the steps since the last one. This callback saves in ``on_exception``, for
that exception only: any other exception can stop a run mid-step (weights updated, counters not), and a
checkpoint of that state would not resume exactly.

``--ckpt_path last`` (``trainer.fit(ckpt_path="last")``) picks the newest of this file and the
``ModelCheckpoint`` ``last`` files, as for Lightning's ``OnExceptionCheckpoint``; a run that then completes
removes it. With ``AtomicCheckpointIO`` the file is written to a temporary file beside it and renamed, so a
SIGKILL during the save leaves the previous file whole.

Under SLURM with ``auto_requeue``, Lightning answers the requeue signal (``SIGUSR1``, sent ahead of the
time limit with ``--signal=SIGUSR1@90``) by saving ``hpc_ckpt_N.ckpt`` *inside the signal handler*, wherever
the run happens to be: halfway through a forward pass or an optimizer step, and, under DDP, while the other
ranks are in a collective of their own. This callback replaces that handler with one that only notes the
signal; at the end of the next training batch every rank agrees on it (one all-reduce per batch, only under
SLURM requeueing) and Lightning's own requeue then runs there, all ranks together, at a point from which the
run resumes exactly. A requeued job resumes from the ``hpc_ckpt`` by itself, as Lightning does.

It is a ``Checkpoint`` callback, and Lightning adds its default ``ModelCheckpoint`` only when no ``Checkpoint``
callback is listed: list a ``ModelCheckpoint`` beside it (the shipped configs do).
"""

from __future__ import annotations

import os
import signal
import threading
from typing import Any

from lightning_dpo.namespace import pl, submodule

_OnExceptionCheckpoint = submodule("callbacks.on_exception_checkpoint").OnExceptionCheckpoint
_SIGTERMException = submodule("utilities.exceptions").SIGTERMException


class PreemptionCheckpoint(_OnExceptionCheckpoint):
    """Saves ``<dirpath>/<filename>.ckpt`` when SIGTERM stops ``fit`` (see the module docstring).

    Args:
        dirpath: The folder of the checkpoint. Relative paths are relative to the working directory (which
            stays the same when a cluster requeues the job, unlike a logger's ``version_N`` folder).
        filename: The file name, without ``.ckpt``.
    """

    def __init__(self, dirpath: str = "checkpoints", filename: str = "preempted") -> None:
        super().__init__(dirpath=dirpath, filename=filename)
        self._requeue_signal: int | None = None
        self._requeue_requested = False

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Take over SLURM's requeue signal (Lightning registered its handler just before training starts)."""
        environment = trainer._accelerator_connector.cluster_environment
        slurm = submodule("plugins.environments").SLURMEnvironment
        if not isinstance(environment, slurm) or not environment.auto_requeue or environment.requeue_signal is None:
            return
        if threading.current_thread() is not threading.main_thread():
            return  # signal handlers can only be set from the main thread; Lightning's stays
        self._requeue_signal = environment.requeue_signal
        signal.signal(self._requeue_signal, self._note_requeue)

    def _note_requeue(self, signum: int, frame: Any) -> None:
        self._requeue_requested = True  # acted on at the next batch end, on every rank at once

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, *args: Any) -> None:
        if self._requeue_signal is None:
            return
        requested = trainer.strategy.reduce_boolean_decision(self._requeue_requested, all=False)  # any rank
        if requested:
            self._requeue_requested = False
            # Lightning's own requeue: loggers finalised, hpc_ckpt_N.ckpt saved (all ranks), scontrol requeue.
            trainer._signal_connector._slurm_sigusr_handler_fn(self._requeue_signal, None)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        if not isinstance(exception, _SIGTERMException) or trainer.sanity_checking:
            return
        if trainer.state.fn != "fit":
            return
        trainer.save_checkpoint(self.ckpt_path)
        submodule("utilities").rank_zero_info(
            f"SIGTERM: saved {self.ckpt_path} at step {trainer.global_step}; resume with --ckpt_path last "
            f"(or ckpt_path={os.path.abspath(self.ckpt_path)!r})"
        )

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage == "fit":  # a run that got to the end: the preemption checkpoint is stale
            super().teardown(trainer, pl_module, stage)

    def state_dict(self) -> dict[str, Any]:
        return {}
