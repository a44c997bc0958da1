"""``RewardMarginCallback``: the distribution of implicit-reward margins, not only their mean.

The margin of a pair is r(x, yw) − r(x, yl) = β·h. A mean margin can grow while a tail of pairs moves the
wrong way; the quantiles and the fraction of negative margins show it.
"""

from __future__ import annotations

import csv
import os
from collections import deque

import torch
from torch import Tensor

from lightning_dpo.namespace import pl, submodule

CSV_FIELDS = ("stage", "epoch", "step", "count", "mean", "std", "p10", "p50", "p90", "frac_negative")


def margin_summary(margins: Tensor) -> dict[str, float]:
    """Summary statistics of a 1-D tensor of margins."""
    m = margins.detach().float().cpu()
    q = torch.quantile(m, torch.tensor([0.1, 0.5, 0.9])) if m.numel() else torch.full((3,), float("nan"))
    return {
        "count": float(m.numel()),
        "mean": m.mean().item(),
        "std": m.std(unbiased=False).item() if m.numel() else float("nan"),
        "p10": q[0].item(),
        "p50": q[1].item(),
        "p90": q[2].item(),
        "frac_negative": (m < 0).float().mean().item(),
    }


class RewardMarginCallback(pl.Callback):
    """Logs ``{train,val}/margins/{std,p10,p50,p90,frac_negative}``, a margin histogram (TensorBoard), and one
    row per epoch and stage in ``margins.csv`` in the run's log directory.

    Reads the ``margins`` that ``DPOModule``'s steps return. Training values are over a sliding window of
    the last ``train_window`` batches (default: the Trainer's ``log_every_n_steps``); validation values are
    over the whole validation set, gathered from every process.

    Args:
        csv_name: File name of the per-epoch summary, in ``trainer.log_dir``. ``None`` to skip it.
        histogram: Also log margin histograms where the logger can show them (TensorBoard).
        train_window: Batches in the training window.
    """

    def __init__(self, csv_name: str | None = "margins.csv", histogram: bool = True, train_window: int | None = None):
        self.csv_name = csv_name
        self.histogram = histogram
        self.train_window = train_window
        self._window: deque[Tensor] = deque()
        self._epoch: dict[str, list[Tensor]] = {"train": [], "val": []}

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs, batch, batch_idx):
        margins = outputs["margins"].detach()
        self._window.append(margins)
        while len(self._window) > (self.train_window or trainer.log_every_n_steps):
            self._window.popleft()
        self._epoch["train"].append(margins.cpu())
        stats = margin_summary(torch.cat(list(self._window)))
        pl_module.log_dict(
            {f"train/margins/{k}": v for k, v in stats.items() if k not in ("count", "mean")},
            on_step=True,
            on_epoch=False,
            batch_size=margins.numel(),
        )

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if not trainer.sanity_checking:
            self._epoch["val"].append(outputs["margins"].detach())

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not self._epoch["val"]:
            return
        margins = _gather_ragged(pl_module, torch.cat(self._epoch["val"]))
        self._epoch["val"].clear()
        stats = margin_summary(margins)
        # Identical on every rank (gathered), so no further reduction is needed.
        pl_module.log_dict(
            {f"val/margins/{k}": v for k, v in stats.items() if k not in ("count", "mean")},
            on_epoch=True,
        )
        self._write(trainer, "val", stats, margins)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._epoch["train"]:
            return
        margins = _gather_ragged(pl_module, torch.cat(self._epoch["train"]).to(pl_module.device))
        self._epoch["train"].clear()
        self._write(trainer, "train", margin_summary(margins), margins)

    def _write(self, trainer: pl.Trainer, stage: str, stats: dict[str, float], margins: Tensor) -> None:
        log_dir = trainer.log_dir  # a collective under DDP (broadcast from rank 0): read it on every rank
        if not trainer.is_global_zero:
            return
        if self.histogram:
            for logger in trainer.loggers:
                if isinstance(logger, submodule("loggers").TensorBoardLogger):
                    logger.experiment.add_histogram(f"{stage}/margins", margins.float().cpu(), trainer.global_step)
        if self.csv_name and log_dir is not None:
            os.makedirs(log_dir, exist_ok=True)
            path = os.path.join(log_dir, self.csv_name)
            new = not os.path.exists(path)
            with open(path, "a", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
                if new:
                    writer.writeheader()
                writer.writerow({"stage": stage, "epoch": trainer.current_epoch, "step": trainer.global_step, **stats})


def _gather_ragged(pl_module: pl.LightningModule, values: Tensor) -> Tensor:
    """All-gather 1-D tensors whose lengths differ across processes; the result is the same on every rank."""
    trainer = pl_module.trainer
    if trainer is None or trainer.world_size == 1:
        return values
    values = values.to(pl_module.device)
    sizes = pl_module.all_gather(torch.tensor(values.numel(), device=pl_module.device))  # (world,)
    padded = torch.zeros(int(sizes.max()), dtype=values.dtype, device=values.device)
    padded[: values.numel()] = values
    gathered = pl_module.all_gather(padded)  # (world, max)
    return torch.cat([row[: int(n)] for row, n in zip(gathered, sizes)])
