"""DPO of a LoRA adapter, with the reference served by the same network with its adapter switched off.

    python examples/lora_adapter.py                  # the embedded tiny default, on a CPU
    python examples/lora_adapter.py --fast-dev-run   # two steps: checks that it runs (the tests use this)

One copy of the base weights serves both models, and the optimizer holds only the adapter, so the reference
costs no memory (docs/reference-modes.md measures it). Needs peft: ``pip install 'lightning-dpo[peft]'``.
The export is the adapter alone; load it with ``PeftModel.from_pretrained`` onto the base, or pass
``HFExportCallback(merge_adapter=True)`` for a merged model.
"""

from __future__ import annotations

import argparse
from functools import partial

import pytorch_lightning as pl
import torch

from lightning_dpo import DPOModule, HFExportCallback, PreferenceDataModule
from lightning_dpo.embedded import DEFAULT_DATASET, DEFAULT_MODEL

# The keys are peft.LoraConfig's own; "all-linear" adapts every linear layer but the LM head.
LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.0, "target_modules": "all-linear"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--dataset", default=DEFAULT_DATASET)
    parser.add_argument("--max-steps", type=int, default=125)
    parser.add_argument("--lr", type=float, default=1e-3, help="LoRA takes a larger rate than full fine-tuning")
    parser.add_argument("--fast-dev-run", action="store_true", help="two steps and a short validation")
    args = parser.parse_args()
    short = {"max_steps": 2, "val_check_interval": 2, "limit_val_batches": 2} if args.fast_dev_run else {}

    pl.seed_everything(0)
    model = DPOModule(
        model_name_or_path=args.model,
        lora=LORA,
        reference={"mode": "adapter"},  # the reference is the policy with its adapter disabled
        loss={"beta": 0.5},
        optimizer=partial(torch.optim.AdamW, lr=args.lr, weight_decay=0.0),
        lr_scheduler=None,
    )
    data = PreferenceDataModule(dataset=args.dataset, batch_size=16, max_length=128)
    trainer = pl.Trainer(
        **{"max_steps": args.max_steps, "val_check_interval": 25, **short},
        default_root_dir="runs/lora_adapter",
        callbacks=[HFExportCallback()],
        enable_progress_bar=False,
    )
    trainer.fit(model, data)
    trainable = sum(p.numel() for p in model.policy.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.policy.parameters())
    print(f"trainable parameters: {trainable:,} of {total:,}")
    print({k: round(v.item(), 4) for k, v in trainer.callback_metrics.items() if k.startswith("val/")})


if __name__ == "__main__":
    main()
