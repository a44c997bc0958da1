"""One short, checkpointed fit that tests/test_interruptions.py runs in its own process and interrupts, and
runs in-process to compare with (uninterrupted, and resumed).

    python interrupted_fit.py MODEL_DIR DATA_DIR ROOT EVENT

8 optimizer steps of 4 pairs, validation (2 batches) after steps 3 and 6, ``ModelCheckpoint`` every 2 steps
with ``last.ckpt``, ``PreemptionCheckpoint`` and ``AtomicCheckpointIO``, all in ``ROOT/ckpt``. The process
prints ``step N`` after every optimizer step (flushed), for a parent that signals it. EVENT:

    none           run to the end
    kill-train     SIGKILL itself after step 5 (between the checkpoints of steps 4 and 6)
    kill-write     SIGKILL itself halfway through writing last.ckpt at step 4
    term-val       SIGTERM itself in the second validation
    wait           nothing: the parent sends a signal after ``step 3``; from then on each step first sleeps a
                   second, so that the run cannot end before the signal lands, however loaded the machine
"""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import torch

from lightning_dpo import AtomicCheckpointIO, DPOModule, PreemptionCheckpoint, PreferenceDataModule
from lightning_dpo.namespace import pl, submodule
from lightning_dpo.optim import LinearWarmup

STEPS = 8


class Steps(pl.Callback):
    """The loss of every optimizer step; ``event`` decides when this process kills itself."""

    def __init__(self, event: str = "none") -> None:
        self.losses: list[float] = []
        self.event = event
        self.validations = 0

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.event == "wait" and trainer.global_step >= 3:
            time.sleep(1.0)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(outputs["loss"].item())
        print(f"step {trainer.global_step}", flush=True)
        if self.event == "kill-train" and trainer.global_step == 5:
            os.kill(os.getpid(), signal.SIGKILL)

    def on_validation_start(self, trainer, pl_module):
        self.validations += 1

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
        if self.validations == 2 and batch_idx == 1:
            if self.event == "term-val":
                os.kill(os.getpid(), signal.SIGTERM)


def die_halfway_through_last_ckpt_at_step(step: int, trainer_ref: list) -> None:
    """Make ``torch.save`` into ``last.ckpt``'s temporary file stop halfway, by SIGKILL, at ``step``."""
    real = torch.save

    def save(obj, f, *args, **kwargs):
        name = getattr(f, "name", "")
        if isinstance(name, str) and ".last.ckpt." in name and trainer_ref[0].global_step == step:
            import io

            buffer = io.BytesIO()
            real(obj, buffer, *args, **kwargs)
            f.write(buffer.getvalue()[: buffer.tell() // 2])
            f.flush()
            os.fsync(f.fileno())
            os.kill(os.getpid(), signal.SIGKILL)
        return real(obj, f, *args, **kwargs)

    torch.save = save


def fit(model_dir, data_dir, root, ckpt_path=None, event="none", environment=None) -> Steps:
    root = Path(root)
    pl.seed_everything(0)
    module = DPOModule(
        model_name_or_path=str(model_dir),
        optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2),
        lr_scheduler=lambda o: LinearWarmup(o, warmup_steps=4),
    )
    data = PreferenceDataModule(
        dataset=str(data_dir),
        tokenizer_name_or_path=str(model_dir),
        batch_size=4,
        max_length=96,
        max_prompt_length=48,
        group_by_length=True,
    )
    steps = Steps(event)
    callbacks = [
        steps,
        pl.callbacks.ModelCheckpoint(dirpath=root / "ckpt", every_n_train_steps=2, save_top_k=-1, save_last=True),
        PreemptionCheckpoint(dirpath=str(root / "ckpt")),
    ]
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_steps=STEPS,
        default_root_dir=root,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        val_check_interval=3,
        limit_val_batches=2,
        num_sanity_val_steps=0,
        deterministic=True,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO(), *([environment] if environment is not None else [])],
    )
    if event == "kill-write":
        die_halfway_through_last_ckpt_at_step(4, [trainer])
    trainer.fit(module, data, ckpt_path=ckpt_path)
    return steps


if __name__ == "__main__":
    model_dir, data_dir, root, event = sys.argv[1:]
    environment = None
    if os.environ.get("SLURM_JOB_ID"):  # an emulated SLURM job: Lightning's requeue handling, as on a cluster
        environment = submodule("plugins.environments").SLURMEnvironment(auto_requeue=True)
    fit(model_dir, data_dir, root, event=event, environment=environment)
    print("finished", flush=True)
