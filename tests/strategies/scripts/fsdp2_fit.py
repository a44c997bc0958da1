"""configs/fsdp2.yaml (ModelParallelStrategy + fully_shard in configure_model) on 2 CPU processes (gloo).

Run A trains 4 steps with the policy's gradient checkpointing on, saving a (sharded) checkpoint every 2
steps and exporting the policy at the end; run B resumes from the step-2 checkpoint to step 4 again.

    python fsdp2_fit.py MODEL_DIR DATA_DIR ROOT OUT_JSON
"""

import sys
from pathlib import Path

from common import Record, from_config, overrides, write
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor

from lightning_dpo import HFExportCallback
from lightning_dpo.namespace import pl

model_dir, data_dir, root, out = sys.argv[1:]


def unit_params(unit):
    """The parameters an FSDP2 unit manages itself: its subtree's, less those of units nested inside it."""
    nested = [m for m in unit.modules() if m is not unit and isinstance(m, FSDPModule)]
    inner = {id(p) for m in nested for p in m.parameters()}
    return [p for p in unit.parameters() if id(p) not in inner]


class FSDPFacts(Record):
    def on_train_start(self, trainer, pl_module):
        policy, reference = pl_module.policy, pl_module.reference.model
        units = [m for m in pl_module.modules() if isinstance(m, FSDPModule)]
        in_optimizer = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
        self.facts.update(
            strategy=type(trainer.strategy).__name__,
            policy_is_unit=isinstance(policy, FSDPModule),
            reference_is_unit=isinstance(reference, FSDPModule),
            module_is_unit=isinstance(pl_module, FSDPModule),
            units=len(units),
            mixed_units=sum(len({p.requires_grad for p in unit_params(u)}) > 1 for u in units),
            all_dtensor=all(isinstance(p, DTensor) for p in pl_module.parameters()),
            placements=sorted({str(p.placements) for p in pl_module.parameters()}),
            embed_rows=[
                policy.get_input_embeddings().weight.shape[0],
                policy.get_input_embeddings().weight.to_local().shape[0],
            ],
            reference_requires_grad=any(p.requires_grad for p in reference.parameters()),
            reference_training=any(m.training for m in reference.modules()),
            optimizer_is_policy=in_optimizer == {id(p) for p in policy.parameters() if p.requires_grad},
            optimizer_has_reference=bool(in_optimizer & {id(p) for p in reference.parameters()}),
            policy_checkpointing=policy.model.layers[0].gradient_checkpointing,
            reference_checkpointing=reference.model.layers[0].gradient_checkpointing,
        )


def fit(ckpt_path=None):
    record = FSDPFacts()
    cli = from_config(
        "fsdp2.yaml",
        *overrides(model_dir, data_dir, root, steps=4),
        "--model.gradient_checkpointing",
        "true",
        "--data.batch_size",
        "4",  # 4 x 2 devices = 8 pairs a step: 6 steps an epoch, so step 2 is mid-epoch
    )
    every_2 = pl.callbacks.ModelCheckpoint(dirpath=Path(root) / "ckpt", every_n_train_steps=2, save_top_k=-1)
    cli.trainer.callbacks += [record, every_2]
    cli.trainer.fit(cli.model, cli.datamodule, ckpt_path=ckpt_path)
    (export,) = [c for c in cli.trainer.callbacks if isinstance(c, HFExportCallback)]
    return cli.trainer, {**record.result(cli.trainer), "exported": export.last_export}


trainer, a = fit()
step2 = Path(root) / "ckpt" / "epoch=0-step=2.ckpt"
checkpoint = {"is_dir": step2.is_dir(), "files": sorted(p.name for p in step2.iterdir()) if step2.is_dir() else []}
trainer, b = fit(ckpt_path=str(step2))
write(out, trainer, {"a": a, "b": {"losses": b["losses"], "exported": b["exported"]}, "checkpoint": checkpoint})
