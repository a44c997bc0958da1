"""The Preferred-FT baseline of the DPO paper: plain supervised fine-tuning on the *chosen* completions.

    python scripts/preferred_ft.py --save_dir runs/frontier --steps_per_export 25

Same model, data, batches, optimizer (AdamW 1e-4, 20 warmup steps) and step budget (one epoch, 125 steps of
16 pairs) as the default DPO run (configs/tiny.yaml), with the loss swapped for the token-mean negative
log-likelihood of the chosen completion. No reference model is involved. It writes a run directory
(``<save_dir>/preferred-ft/version_N``) with ``metrics.csv``, ``hparams.yaml`` (``model_name_or_path``: the
reference the KL is measured against) and ``hf_model/step-N`` exports, which ``lightning-dpo evaluate`` reads.
"""

from __future__ import annotations

import argparse

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import LearningRateMonitor
from pytorch_lightning.loggers import CSVLogger
from torch import Tensor

from lightning_dpo import HFExportCallback, PreferenceDataModule
from lightning_dpo.embedded import DEFAULT_DATASET, DEFAULT_MODEL
from lightning_dpo.logps import completion_logps
from lightning_dpo.models import disable_dropout, load_causal_lm
from lightning_dpo.optim import LinearWarmup


class PreferredFT(pl.LightningModule):
    """SFT on the chosen half of ``PreferenceDataModule``'s concatenated batches (chosen rows first)."""

    def __init__(self, model_name_or_path: str = DEFAULT_MODEL, lr: float = 1e-4, warmup_steps: int = 20) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.policy = load_causal_lm(model_name_or_path)
        disable_dropout(self.policy)
        self.policy.train()

    def _nll(self, batch: dict[str, Tensor]) -> Tensor:
        chosen = {k: v[: v.shape[0] // 2] for k, v in batch.items()}  # (B, T): the chosen rows
        out = completion_logps(self.policy, chosen)
        return -out.logps.sum() / out.num_tokens.sum()  # token-mean NLL of the chosen completions

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self._nll(batch)
        self.log("train/loss", loss, batch_size=batch["input_ids"].shape[0] // 2)
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self.log("val/loss", self._nll(batch), batch_size=batch["input_ids"].shape[0] // 2)

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.policy.parameters(), lr=self.hparams.lr, weight_decay=0.0)
        scheduler = LinearWarmup(optimizer, warmup_steps=self.hparams.warmup_steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--dataset", default=DEFAULT_DATASET)
    parser.add_argument("--save_dir", default=".")
    parser.add_argument("--name", default="preferred-ft")
    parser.add_argument("--steps_per_export", type=int, default=None, help="also export every N steps")
    parser.add_argument("--max_steps", type=int, default=-1, help="-1: one epoch")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    pl.seed_everything(args.seed)
    data = PreferenceDataModule(dataset=args.dataset, batch_size=16, max_length=128, max_prompt_length=64)
    trainer = pl.Trainer(
        accelerator="auto",
        devices=1,
        max_epochs=1,
        max_steps=args.max_steps,
        val_check_interval=25 if args.max_steps < 0 or args.max_steps >= 25 else None,
        log_every_n_steps=10,
        num_sanity_val_steps=0,
        enable_checkpointing=False,
        enable_progress_bar=False,
        logger=CSVLogger(args.save_dir, name=args.name),
        callbacks=[
            LearningRateMonitor(logging_interval="step"),
            HFExportCallback(every_n_train_steps=args.steps_per_export),
        ],
    )
    trainer.fit(PreferredFT(args.model), data)


if __name__ == "__main__":
    main()
