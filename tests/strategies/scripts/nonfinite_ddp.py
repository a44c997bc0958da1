"""The non-finite guard under DDP and gradient accumulation: rank 1 alone sees a NaN, both ranks decide alike.

python nonfinite_ddp.py MODEL_DIR DATA_DIR ROOT OUT_JSON skip|raise

configs/ddp.yaml on 2 CPU processes, 4 pairs per device, 2 micro-batches per optimizer step (3 steps an
epoch, 2 epochs, 5 steps); rank 1's policy log-probs go NaN in batch 3 of every epoch, the second micro-batch
of optimizer steps 1 and 4. Each rank writes OUT_JSON.rank<r>: a weight checksum before the first and after
every optimizer step, the skip count, or the error it raised.
"""

import json
import sys

import torch
from common import from_config, overrides

import lightning_dpo.module as module_mod
from lightning_dpo import NonFiniteError
from lightning_dpo.namespace import pl

model_dir, data_dir, root, out, mode = sys.argv[1:]
POISONED = {3}  # batch index in the epoch: micro-batch 2 of optimizer steps 1 and 4


class Poison(pl.Callback):
    armed = False

    def __init__(self):
        self.checksums, self.poisoned = [], []

    def on_train_start(self, trainer, pl_module):
        self.on_train_batch_end(trainer, pl_module, None, None, -1)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        Poison.armed = trainer.global_rank == 1 and batch_idx in POISONED
        if Poison.armed:
            self.poisoned += trainer.datamodule.pair_locations([int(batch["pair_index"][0])])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx < 0 or not trainer.fit_loop._should_accumulate():
            self.checksums.append(sum(p.double().sum().item() for p in pl_module.policy.parameters()))


real = module_mod.completion_logps


def poisoned_logps(*args, **kwargs):
    out = real(*args, **kwargs)
    if not Poison.armed:
        return out
    logps = out.logps.clone()
    logps[0] = float("nan")
    return out._replace(logps=logps)


module_mod.completion_logps = poisoned_logps

poison = Poison()
cli = from_config(
    "ddp.yaml",
    *overrides(model_dir, data_dir, root, steps=5),
    "--data.batch_size",
    "4",
    "--trainer.accumulate_grad_batches",
    "2",
    "--trainer.limit_val_batches",
    "0",
    "--trainer.max_epochs",
    "2",
    "--model.nonfinite.action",
    mode,
    "--model.nonfinite.max_skips",
    "3",
)
cli.trainer.callbacks.append(poison)
result = {}
try:
    cli.trainer.fit(cli.model, cli.datamodule)
except NonFiniteError as e:
    result["error"] = str(e)
rank = cli.trainer.global_rank
result.update(
    rank=rank,
    world_size=cli.trainer.world_size,
    checksums=poison.checksums,
    poisoned=poison.poisoned,
    skipped=cli.model.nonfinite_guard.skipped,
    finite=all(bool(torch.isfinite(p).all()) for p in cli.model.policy.parameters()),
)
with open(f"{out}.rank{rank}", "w") as f:
    json.dump(result, f)
