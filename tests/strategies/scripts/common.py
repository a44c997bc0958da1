"""Shared by the multi-process scripts and their tests: runs built from the repository's configs, and a
callback recording what the tests check.

The scripts run as ``python script.py ...``: Lightning's launcher re-executes ``sys.argv`` for each extra
rank, so they must never run inside pytest's own process.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lightning_dpo import PreferenceDataModule
from lightning_dpo.commands.fit import DPOCLI
from lightning_dpo.namespace import pl

SCRIPTS = Path(__file__).resolve().parent
CONFIGS = SCRIPTS.parents[2] / "configs"


def overrides(model_dir: str, data_dir: str, root: str, steps: int) -> list[str]:
    """A short, fast run of a config on the tests' tiny model and data; AdamW at 1e-2 so that steps differ."""
    return [
        "--model.model_name_or_path",
        model_dir,
        "--data.dataset",
        data_dir,
        "--data.max_length",
        "96",
        "--data.max_prompt_length",
        "48",
        "--model.optimizer.init_args.lr",
        "1e-2",
        "--model.lr_scheduler.init_args.warmup_steps",
        "1",
        "--trainer.max_steps",
        str(steps),
        "--trainer.val_check_interval",
        str(steps),
        "--trainer.limit_val_batches",
        "2",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
        "--trainer.logger.init_args.save_dir",
        root,
        "--trainer.default_root_dir",
        root,
        "--seed_everything",
        "0",
    ]


def from_config(config: str, *args: str) -> DPOCLI:
    """The CLI's model, data and trainer from ``configs/<config>`` plus ``args``, not run."""
    return DPOCLI(args=["--config", str(CONFIGS / config), *args], run=False)


def make_data(model_dir: str, data_dir: str, batch_size: int) -> PreferenceDataModule:
    return PreferenceDataModule(
        dataset=data_dir, tokenizer_name_or_path=model_dir, batch_size=batch_size, max_length=96, max_prompt_length=48
    )


class Record(pl.Callback):
    """Per optimizer step, the loss averaged over all ranks (each rank's batch is an equal share of the
    global batch); at the end, the reduced validation metrics and whatever ``facts`` collected."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.facts: dict = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(pl_module.all_gather(outputs["loss"].detach()).float().mean().item())

    def result(self, trainer) -> dict:
        metrics = {k: v.item() for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        return {"losses": self.losses, "val": metrics, **self.facts}


def write(path: str | Path, trainer: pl.Trainer, payload: dict) -> None:
    if trainer.is_global_zero:
        Path(path).write_text(json.dumps(payload, indent=1))


def gathered_mean(pl_module: pl.LightningModule, values: list[torch.Tensor]) -> list[float]:
    """This rank's mean of ``values``, gathered: one number per rank."""
    return pl_module.all_gather(torch.cat(values).float().mean()).flatten().tolist()
