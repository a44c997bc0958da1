"""Your own preference loss, registered with ``@register_loss``, trained like a built-in one.

    python examples/custom_loss.py                  # the embedded tiny default, on a CPU
    python examples/custom_loss.py --fast-dev-run   # two steps: checks that it runs (the tests use this)

The registry entry declares what the loss needs (here: a reference, no lengths), and the module supplies it
without knowing the loss's name. On the command line the same loss is
``lightning-dpo fit --model.loss.type examples.custom_loss.margin_mse``, with the folder that holds
``examples/`` on the import path (``PYTHONPATH=.`` in the repository root): a dotted path imports the module,
which registers the loss. It combines with built-in losses like any other:
``--model.loss.type [sigmoid,margin_mse] --model.loss.weights [1.0,0.1]``.
"""

from __future__ import annotations

import argparse
from functools import partial

import pytorch_lightning as pl
import torch
from torch import Tensor

from lightning_dpo import DPOModule, PreferenceDataModule
from lightning_dpo.embedded import DEFAULT_DATASET, DEFAULT_MODEL
from lightning_dpo.losses import LossInputs, register_loss

MARGIN_TARGET = 2.0


@register_loss("margin_mse", uses_reference=True, needs_lengths=False)
def margin_mse(x: LossInputs) -> Tensor:
    """Pull each pair's implicit reward margin β·h towards a target of ``margin_target`` nats.

    Unlike DPO's −log σ(β·h), which keeps widening margins after the pairs are ranked right, a squared error
    stops at the target: the drift from the reference that the reward–KL frontier shows stays bounded.
    """
    margins = x.settings.beta * (x.chosen_logratios - x.rejected_logratios)  # (B,)
    return (margins - MARGIN_TARGET) ** 2  # (B,)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    parser.add_argument("--dataset", default=DEFAULT_DATASET)
    parser.add_argument("--max-steps", type=int, default=125)
    parser.add_argument("--fast-dev-run", action="store_true", help="two steps and a short validation")
    args = parser.parse_args()
    short = {"max_steps": 2, "val_check_interval": 2, "limit_val_batches": 2} if args.fast_dev_run else {}

    pl.seed_everything(0)
    model = DPOModule(
        model_name_or_path=args.model,
        loss={"type": "margin_mse", "beta": 0.5},  # the registered name; or the dotted path of the function
        optimizer=partial(torch.optim.AdamW, lr=1e-4, weight_decay=0.0),
        lr_scheduler=None,
    )
    data = PreferenceDataModule(dataset=args.dataset, batch_size=16, max_length=128)
    trainer = pl.Trainer(
        **{"max_steps": args.max_steps, "val_check_interval": 25, **short},
        default_root_dir="runs/custom_loss",
        enable_progress_bar=False,
    )
    trainer.fit(model, data)
    print({k: round(v.item(), 4) for k, v in trainer.callback_metrics.items() if k.startswith("val/")})


if __name__ == "__main__":
    main()
