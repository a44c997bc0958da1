"""A user's own Lightning script, written in one namespace: fit, a checkpoint round trip, or DDP.

    python user_script.py NAMESPACE MODEL_DIR DATA_DIR ROOT OUT_JSON [fit|ddp]

NAMESPACE is ``lightning`` (``import lightning.pytorch as L``) or ``pytorch_lightning``; it is imported
before lightning_dpo, as a user's imports are, and lightning_dpo follows it with no setting.
"""

import json
import sys

namespace, model_dir, data_dir, root, out, mode = sys.argv[1:]
if namespace == "lightning":
    import lightning.pytorch as L
else:
    import pytorch_lightning as L
import torch  # noqa: E402  (after the namespace: the point of this script)

import lightning_dpo  # noqa: E402
from lightning_dpo import DPOModule, HFExportCallback, PreferenceDataModule, RewardMarginCallback  # noqa: E402


class Losses(L.Callback):  # the user's own callback, from the user's namespace
    def __init__(self):
        self.values = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.values.append(outputs["loss"].item())


def module():
    return DPOModule(model_name_or_path=model_dir, optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2), lr_scheduler=None)


def data(batch_size):
    return PreferenceDataModule(
        dataset=data_dir, tokenizer_name_or_path=model_dir, batch_size=batch_size, max_length=96, max_prompt_length=48
    )


facts = {
    "chosen": lightning_dpo.namespace.NAME,
    "module_is_users": issubclass(DPOModule, L.LightningModule),
    "data_is_users": issubclass(PreferenceDataModule, L.LightningDataModule),
    "callbacks_are_users": all(issubclass(c, L.Callback) for c in (RewardMarginCallback, HFExportCallback)),
}
losses = Losses()
if mode == "fit":
    checkpoint = L.callbacks.ModelCheckpoint(dirpath=f"{root}/ckpt", save_last=True)
    trainer = L.Trainer(
        accelerator="cpu", max_steps=3, limit_val_batches=1, val_check_interval=3, default_root_dir=root,
        logger=L.loggers.CSVLogger(root), enable_progress_bar=False, enable_model_summary=False,
        callbacks=[losses, checkpoint, RewardMarginCallback(), HFExportCallback()],
    )  # fmt: skip
    model = module()
    trainer.fit(model, data(4))
    restored = DPOModule.load_from_checkpoint(f"{root}/ckpt/last.ckpt", weights_only=True)
    facts["restored_equal"] = all(
        torch.equal(value, restored.policy.state_dict()[key]) for key, value in model.policy.state_dict().items()
    )
    validated = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, limit_val_batches=1)
    facts["validated"] = validated.validate(restored, data(4), verbose=False)[0]
else:
    trainer = L.Trainer(
        accelerator="cpu", devices=2, strategy="ddp", max_steps=2, limit_val_batches=0, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, callbacks=[losses],
    )  # fmt: skip
    trainer.fit(module(), data(2))
    facts["world_size"] = trainer.world_size
facts["losses"] = losses.values
if trainer.is_global_zero:
    with open(out, "w") as f:
        json.dump(facts, f)
