"""Resuming fit from a mid-epoch checkpoint repeats the uninterrupted run's losses, step for step."""

from __future__ import annotations

import pytest
import torch

from lightning_dpo import DPOModule
from lightning_dpo.namespace import pl
from lightning_dpo.optim import LinearWarmup


class Losses(pl.Callback):
    def __init__(self):
        self.values = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.values.append(outputs["loss"].item())


@pytest.fixture
def run(tiny_model_dir, make_data, make_trainer):
    """``run(root, steps, ckpt_path=None, save_every=None)`` -> the training losses, step by step."""

    def fit(root, steps, ckpt_path=None, save_every=None):
        pl.seed_everything(0)
        module = DPOModule(
            model_name_or_path=str(tiny_model_dir),
            optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2),
            lr_scheduler=lambda o: LinearWarmup(o, warmup_steps=4),
        )
        losses = Losses()
        callbacks = [losses]
        if save_every:
            every = pl.callbacks.ModelCheckpoint(dirpath=root / "ckpt", every_n_train_steps=save_every, save_top_k=-1)
            callbacks.append(every)
        trainer = make_trainer(
            max_steps=steps,
            default_root_dir=root,
            enable_checkpointing=bool(save_every),
            callbacks=callbacks,
            deterministic=True,
        )
        trainer.fit(module, make_data(group_by_length=True), ckpt_path=ckpt_path)
        return losses.values

    return fit


def test_mid_epoch_resume_is_exact(tmp_path, run):
    uninterrupted = run(tmp_path / "a", steps=16, save_every=5)  # 12 batches/epoch
    for step in (5, 15):  # mid-epoch 0, and mid-epoch 1 (after the sampler's reshuffle)
        (checkpoint,) = (tmp_path / "a" / "ckpt").glob(f"*step={step}.ckpt")
        resumed = run(tmp_path / f"b{step}", steps=16, ckpt_path=checkpoint)
        assert resumed == pytest.approx(uninterrupted[step:], abs=1e-6)
