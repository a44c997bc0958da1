"""configs/ddp.yaml on 2 CPU processes (gloo): losses, reduced validation metrics, what the DDP reducer holds.

python ddp_fit.py MODEL_DIR DATA_DIR ROOT OUT_JSON
"""

import sys

from common import Record, from_config, gathered_mean, overrides, write

from lightning_dpo import HFExportCallback

model_dir, data_dir, root, out = sys.argv[1:]


class DDPFacts(Record):
    def on_train_start(self, trainer, pl_module):
        ddp = trainer.strategy.model  # torch DistributedDataParallel around the DPOModule
        data = ddp._get_ddp_logging_data()
        trainable = [p for p in pl_module.policy.parameters() if p.requires_grad]
        self.facts.update(
            ddp_class=type(ddp).__name__,
            world_size=trainer.world_size,
            global_batch=trainer.datamodule.hparams.batch_size * trainer.world_size * trainer.accumulate_grad_batches,
            reducer_tensors=data["num_parameter_tensors"],
            reducer_bytes=data["total_parameter_size_bytes"],
            bucket_bytes=sum(int(b) for b in str(data["bucket_sizes"]).split(",")),
            policy_trainable_tensors=len(trainable),
            policy_trainable_bytes=sum(p.numel() * p.element_size() for p in trainable),
            reference_requires_grad=any(p.requires_grad for p in pl_module.reference.parameters()),
            reference_training=pl_module.reference.training,
        )
        self.local_margins = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        self.local_margins.append(outputs["margins"])  # this rank's pairs only

    def on_validation_end(self, trainer, pl_module):
        self.facts["rank_margins"] = gathered_mean(pl_module, self.local_margins)


record = DDPFacts()
cli = from_config("ddp.yaml", *overrides(model_dir, data_dir, root, steps=3))
cli.trainer.callbacks.append(record)
cli.trainer.fit(cli.model, cli.datamodule)
(export,) = [c for c in cli.trainer.callbacks if isinstance(c, HFExportCallback)]
write(out, cli.trainer, {**record.result(cli.trainer), "exported": export.last_export})
