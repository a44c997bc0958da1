"""DPO with the reference's log-probs computed once, before training, and cached on disk.

    python examples/precomputed_reference.py                  # the embedded tiny default, on a CPU
    python examples/precomputed_reference.py --fast-dev-run   # two steps: checks that it runs (the tests use this)

Before the first step, one pass of the reference over every train and validation pair writes a table of
their log-probs to ``--cache-dir``; the reference model is then freed, so training holds one model and runs
one forward pass a step. The table's key covers every pair's tokens, the reference's weights and ``ld_alpha``:
run the script twice and the second run reads the table without a forward pass (it says so in its log).
"""

from __future__ import annotations

import argparse
from functools import partial

import pytorch_lightning as pl
import torch

from lightning_dpo import DPOModule, PreferenceDataModule
from lightning_dpo.embedded import DEFAULT_DATASET, DEFAULT_MODEL


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--dataset", default=DEFAULT_DATASET)
    parser.add_argument("--max-steps", type=int, default=125)
    parser.add_argument("--cache-dir", default="runs/precomputed_reference/reference_logps")
    parser.add_argument("--fast-dev-run", action="store_true", help="two steps and a short validation")
    args = parser.parse_args()
    short = {"max_steps": 2, "val_check_interval": 2, "limit_val_batches": 2} if args.fast_dev_run else {}

    pl.seed_everything(0)
    model = DPOModule(
        model_name_or_path=args.model,
        # The policy's starting weights are the reference; a different model would go in model_name_or_path.
        reference={"mode": "precomputed", "cache_dir": args.cache_dir, "precompute_batch_size": 64},
        loss={"beta": 0.5},
        optimizer=partial(torch.optim.AdamW, lr=1e-4, weight_decay=0.0),
        lr_scheduler=None,
    )
    data = PreferenceDataModule(dataset=args.dataset, batch_size=16, max_length=128)
    trainer = pl.Trainer(
        **{"max_steps": args.max_steps, "val_check_interval": 25, **short},
        default_root_dir="runs/precomputed_reference",
        enable_progress_bar=False,
    )
    trainer.fit(model, data)
    print({k: round(v.item(), 4) for k, v in trainer.callback_metrics.items() if k.startswith("val/")})


if __name__ == "__main__":
    main()
