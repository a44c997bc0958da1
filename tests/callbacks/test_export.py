"""HFExportCallback: the exported policy loads back with transformers."""

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from lightning_dpo import DPOModule, HFExportCallback, PreferenceDataModule
from lightning_dpo.namespace import pl


def test_export_round_trip(tmp_path, tiny_model_dir, tiny_data_dir):
    module = DPOModule(model_name_or_path=str(tiny_model_dir), optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2))
    data = PreferenceDataModule(dataset=str(tiny_data_dir), batch_size=4, max_length=96, max_prompt_length=48)
    export = HFExportCallback(every_n_train_steps=2)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=2,
        default_root_dir=tmp_path,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        limit_val_batches=0,
        callbacks=[export],
    )
    trainer.fit(module, data)  # the tokenizer defaults to the model's
    assert (tmp_path / "hf_model" / "step-2" / "model.safetensors").exists()

    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "hf_model")
    for key, value in module.policy.state_dict().items():
        assert torch.equal(exported.state_dict()[key], value)
    assert len(AutoTokenizer.from_pretrained(tmp_path / "hf_model")) == len(data.tokenizer)
