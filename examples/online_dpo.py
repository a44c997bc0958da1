"""Online DPO: each step samples completions from the current policy, scores them, and trains on the pairs.

    python examples/online_dpo.py                  # 40 steps on the embedded tiny default, on a CPU
    python examples/online_dpo.py --fast-dev-run   # two steps: checks that it runs (the tests use this)

``OnlineDPOModule`` is a ``DPOModule`` whose pairs come from the policy itself (TRL's ``OnlineDPOTrainer``):
for every prompt of a batch it samples ``samples_per_prompt`` completions, scores them with a reward (any
``(prompts, completions) -> rewards`` callable, here the bundled task's politeness rule), pairs the best with
the worst, and takes the ordinary DPO step on the sampled token ids, so every registered loss applies.
``PromptDataModule`` reads prompts from any source ``PreferenceDataModule`` reads.
"""

from __future__ import annotations

import argparse
from functools import partial

import pytorch_lightning as pl
import torch

from lightning_dpo import OnlineDPOModule, PromptDataModule
from lightning_dpo.embedded import DEFAULT_DATASET, DEFAULT_MODEL


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--dataset", default=DEFAULT_DATASET)
    parser.add_argument("--max-steps", type=int, default=40)
    parser.add_argument("--fast-dev-run", action="store_true", help="two steps and a short validation")
    args = parser.parse_args()
    short = {"max_steps": 2, "val_check_interval": 2, "limit_val_batches": 1} if args.fast_dev_run else {}

    pl.seed_everything(0)
    model = OnlineDPOModule(
        model_name_or_path=args.model,
        scoring={"reward": "lightning_dpo.tasks.politeness.politeness_reward"},
        sampling={"max_new_tokens": 32, "temperature": 1.0, "seed": 0},
        samples_per_prompt=2,
        missing_eos_penalty=1.0,  # a sample that never ends scores one less, as in TRL
        loss={"type": "sigmoid", "beta": 0.5},
        optimizer=partial(torch.optim.AdamW, lr=1e-4, weight_decay=0.0),
        lr_scheduler=None,
    )
    data = PromptDataModule(dataset=args.dataset, batch_size=8, num_val_prompts=16, max_prompt_length=128)
    trainer = pl.Trainer(
        **{"max_steps": args.max_steps, "val_check_interval": 20, "limit_val_batches": 2, **short},
        default_root_dir="runs/online_dpo",
        enable_progress_bar=False,
        enable_checkpointing=False,
        num_sanity_val_steps=0,
    )
    trainer.fit(model, data)
    print({k: round(v.item(), 4) for k, v in trainer.callback_metrics.items() if k.startswith("val/")})


if __name__ == "__main__":
    main()
