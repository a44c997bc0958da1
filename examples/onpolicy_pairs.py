"""On-policy preference data: sample the SFT model, score its samples, pair them, then run DPO on that file.

    python examples/onpolicy_pairs.py                   # 256 prompts x 4 samples, then 1 epoch of DPO, on a CPU
    python examples/onpolicy_pairs.py --rule ranking    # all 4 samples as one ranking: Plackett-Luce DPO
    python examples/onpolicy_pairs.py --fast-dev-run    # 16 prompts and two steps: checks that it runs

``generate_pairs`` is ``lightning-dpo generate`` from Python: K samples per prompt from ``--model``, scored
by a reward (any ``(prompts, completions) -> rewards`` callable; here the bundled task's politeness rule),
paired best against worst (``--rule best_vs_worst``), every pair a margin apart (``margin``), or kept whole
as rankings (``ranking``). It writes a file the data modules read as it is, its settings and counts beside it
(``<output>.meta.yaml``), and resumes where a killed run stopped. This is the DPO paper's recipe: preference
data sampled from the model being tuned, not from another one.
"""

from __future__ import annotations

import argparse
from functools import partial

import pytorch_lightning as pl
import torch

from lightning_dpo import DPOModule, PreferenceDataModule, RankingDataModule
from lightning_dpo.embedded import DEFAULT_DATASET, DEFAULT_MODEL
from lightning_dpo.evaluation.generation import SamplingSettings
from lightning_dpo.onpolicy import PairSettings, generate_pairs
from lightning_dpo.tasks.politeness import politeness_reward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--prompts", default=DEFAULT_DATASET)
    parser.add_argument("--rule", choices=["best_vs_worst", "margin", "ranking"], default="best_vs_worst")
    parser.add_argument("--num-prompts", type=int, default=256)
    parser.add_argument("--fast-dev-run", action="store_true", help="16 prompts, two steps and a short validation")
    args = parser.parse_args()
    num_prompts = 16 if args.fast_dev_run else args.num_prompts
    short = {"max_steps": 2, "val_check_interval": 2, "limit_val_batches": 1} if args.fast_dev_run else {}

    output = f"runs/onpolicy_pairs/{args.rule}-{num_prompts}/train.jsonl"
    made = generate_pairs(
        args.model,
        output,
        prompts=args.prompts,
        num_prompts=num_prompts,
        samples_per_prompt=4,
        reward=politeness_reward,
        pairs=PairSettings(rule=args.rule, margin=0.5 if args.rule == "margin" else 0.0),
        sampling=SamplingSettings(max_new_tokens=48, temperature=1.0, seed=0),
        accelerator="cpu",
        progress=False,
    )
    print(made["counts"])

    pl.seed_everything(0)
    ranking = args.rule == "ranking"
    model = DPOModule(
        model_name_or_path=args.model,  # the model that sampled is the policy's start and the reference
        loss={"type": "plackett_luce" if ranking else "sigmoid", "beta": 0.5},
        optimizer=partial(torch.optim.AdamW, lr=1e-4, weight_decay=0.0),
        lr_scheduler=None,
    )
    data_module = RankingDataModule if ranking else PreferenceDataModule
    data = data_module(dataset=output, batch_size=8, max_length=128, val_size=2 if args.fast_dev_run else 0.05)
    trainer = pl.Trainer(
        **{"max_epochs": 1, "val_check_interval": 0.5, **short},
        default_root_dir="runs/onpolicy_pairs",
        enable_progress_bar=False,
        enable_checkpointing=False,
    )
    trainer.fit(model, data)
    print({k: round(v.item(), 4) for k, v in trainer.callback_metrics.items() if k.startswith("val/")})


if __name__ == "__main__":
    main()
