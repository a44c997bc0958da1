"""DPO inside an existing Lightning project: your Trainer, your loggers, your callbacks.

    python examples/plain_lightning.py                 # the embedded tiny default, on a CPU, ~1 minute
    python examples/plain_lightning.py --model Qwen/Qwen2.5-0.5B-Instruct --dataset Anthropic/hh-rlhf

Nothing here is special to lightning_dpo except the two classes and the optional callbacks.
"""

from __future__ import annotations

import argparse
from functools import partial

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import ModelCheckpoint
from pytorch_lightning.loggers import CSVLogger

from lightning_dpo import DPOModule, HFExportCallback, LossSettings, PreferenceDataModule, RewardMarginCallback
from lightning_dpo.embedded import DEFAULT_DATASET, DEFAULT_MODEL
from lightning_dpo.optim import LinearWarmup


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--dataset", default=DEFAULT_DATASET)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--lr", type=float, default=5e-4)
    args = parser.parse_args()

    pl.seed_everything(0)
    model = DPOModule(
        model_name_or_path=args.model,
        loss=LossSettings(beta=0.1),  # or a dict: loss={"beta": 0.1}
        # Any callable params -> Optimizer / Optimizer -> scheduler works; partial is the plain-Python way.
        optimizer=partial(torch.optim.AdamW, lr=args.lr, weight_decay=0.0),
        lr_scheduler=partial(LinearWarmup, warmup_steps=10),
    )
    data = PreferenceDataModule(dataset=args.dataset, batch_size=16, max_length=128, max_prompt_length=64)
    trainer = pl.Trainer(
        max_steps=args.steps,
        val_check_interval=50,
        logger=CSVLogger("runs", name="plain_lightning"),
        callbacks=[
            ModelCheckpoint(monitor="val/rewards/accuracies", mode="max"),
            RewardMarginCallback(),
            HFExportCallback(),
        ],
    )
    trainer.fit(model, data)
    print({k: round(v.item(), 4) for k, v in trainer.callback_metrics.items() if k.startswith("val/")})


if __name__ == "__main__":
    main()
