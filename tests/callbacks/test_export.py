"""HFExportCallback: the exported policy loads back with transformers."""

import os

import pytest
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


def _hidden(folder):
    return [p.name for p in folder.iterdir() if p.name.startswith(".")]


def test_an_export_that_crashes_midway_leaves_the_previous_one(tmp_path, tiny_model_dir):
    from lightning_dpo.callbacks.export import publish_export

    old = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    root = tmp_path / "hf_model"
    publish_export(str(root / "step-2"), old.save_pretrained)
    publish_export(str(root), old.save_pretrained)
    new = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        next(new.parameters()).add_(1.0)

    def crash_after_the_weights(folder):
        new.save_pretrained(folder)
        raise OSError("disk full")  # the tokenizer was never written

    with pytest.raises(OSError, match="disk full"):
        publish_export(str(root), crash_after_the_weights)
    loaded = AutoModelForCausalLM.from_pretrained(root)  # the old export, whole
    assert torch.equal(next(loaded.parameters()), next(old.parameters()))
    assert _hidden(root.parent) == []  # the half-written folder is gone

    publish_export(str(root), new.save_pretrained)  # replacing it keeps the step exports inside
    assert torch.equal(next(AutoModelForCausalLM.from_pretrained(root).parameters()), next(new.parameters()))
    assert (root / "step-2" / "model.safetensors").exists() and _hidden(root.parent) == []


def test_a_crash_in_the_first_export_leaves_no_folder(tmp_path):
    from lightning_dpo.callbacks.export import publish_export

    def crash(folder):
        os.makedirs(folder)
        open(os.path.join(folder, "config.json"), "w").write("{}")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        publish_export(str(tmp_path / "hf_model"), crash)
    assert list(tmp_path.iterdir()) == []  # nothing that from_pretrained could half-load
