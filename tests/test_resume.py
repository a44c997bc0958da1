"""Resuming fit from a mid-epoch checkpoint repeats the uninterrupted run's losses, step for step."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint

from lightning_dpo import DPOModule, PreferenceDataModule
from lightning_dpo.optim import LinearWarmup


class Losses(pl.Callback):
    def __init__(self):
        self.values = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.values.append(outputs["loss"].item())


def run(root, tiny_model_dir, tiny_data_dir, steps, ckpt_path=None, save_every=None):
    pl.seed_everything(0)
    module = DPOModule(
        model_name_or_path=str(tiny_model_dir),
        optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2),
        lr_scheduler=lambda o: LinearWarmup(o, warmup_steps=4),
    )
    data = PreferenceDataModule(
        dataset=str(tiny_data_dir), tokenizer_name_or_path=str(tiny_model_dir), batch_size=4, max_length=96,
        max_prompt_length=48, group_by_length=True,
    )  # fmt: skip
    losses = Losses()
    callbacks = [losses]
    if save_every:
        callbacks.append(ModelCheckpoint(dirpath=root / "ckpt", every_n_train_steps=save_every, save_top_k=-1))
    trainer = pl.Trainer(
        accelerator="cpu", max_steps=steps, default_root_dir=root, logger=False, enable_progress_bar=False,
        enable_model_summary=False, enable_checkpointing=bool(save_every), limit_val_batches=0, callbacks=callbacks,
        deterministic=True,
    )  # fmt: skip
    trainer.fit(module, data, ckpt_path=ckpt_path)
    return losses.values


def test_mid_epoch_resume_is_exact(tmp_path, tiny_model_dir, tiny_data_dir):
    uninterrupted = run(tmp_path / "a", tiny_model_dir, tiny_data_dir, steps=16, save_every=5)  # 12 batches/epoch
    for step in (5, 15):  # mid-epoch 0, and mid-epoch 1 (after the sampler's reshuffle)
        (checkpoint,) = (tmp_path / "a" / "ckpt").glob(f"*step={step}.ckpt")
        resumed = run(tmp_path / f"b{step}", tiny_model_dir, tiny_data_dir, steps=16, ckpt_path=checkpoint)
        assert resumed == pytest.approx(uninterrupted[step:], abs=1e-6)
