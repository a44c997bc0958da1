"""reference mode 'adapter' (LoRA with the adapter disabled), TR-DPO on frozen and adapter references,
and what checkpoints hold."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_dpo import DPOModule, HFExportCallback
from lightning_dpo.namespace import pl

pytest.importorskip("peft")

LORA = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}


def adamw(params):
    return torch.optim.AdamW(params, lr=1e-2)


def test_adapter_first_step_equals_frozen(tiny_model_dir, train_batch):
    frozen = DPOModule(model_name_or_path=str(tiny_model_dir), lora=LORA)
    adapter = DPOModule(model_name_or_path=str(tiny_model_dir), lora=LORA, reference={"mode": "adapter"})
    for m in (frozen, adapter):
        m.configure_model()
    assert not list(adapter.reference.parameters())  # no second copy of the base
    loss_frozen, _ = frozen.dpo_step(train_batch)
    loss_adapter, _ = adapter.dpo_step(train_batch)
    assert loss_adapter.item() == pytest.approx(math.log(2), abs=1e-7)
    assert loss_adapter.item() == pytest.approx(loss_frozen.item(), abs=1e-7)


def test_adapter_trains_only_lora_and_checkpoints_hold_only_it(
    tmp_path, tiny_model_dir, tiny_data_dir, train_batch, make_data, make_trainer
):
    module = DPOModule(
        model_name_or_path=str(tiny_model_dir), lora=LORA, reference={"mode": "adapter"}, optimizer=adamw
    )
    module.configure_model()
    base_before = {n: p.clone() for n, p in module.policy.named_parameters() if "lora_" not in n}
    ref_before = module.reference.logps(train_batch, module.logps_options).logps
    trainer = make_trainer(max_steps=2)
    trainer.fit(module, make_data())

    trained = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    assert trained == {id(p) for n, p in module.policy.named_parameters() if "lora_" in n}
    for name, param in module.policy.named_parameters():
        if "lora_" not in name:
            assert torch.equal(param, base_before[name])
    assert torch.allclose(
        module.reference.logps(train_batch, module.logps_options).logps, ref_before
    )  # the base is the reference
    # The trained adapter moves the policy off the base. Two small AdamW steps move these ~1e2-nat log-probs by
    # ~1e-4 to 1e-3 (allclose's relative tolerance would call that equal, depending on the seed); an untrained,
    # zero-initialised LoRA B leaves them bitwise equal.
    moved = (module.dpo_step(train_batch)[1]["logps/chosen"].values - ref_before[:4]).abs().max()
    assert moved > 1e-5, moved

    trainer.save_checkpoint(tmp_path / "adapter.ckpt")
    state = torch.load(tmp_path / "adapter.ckpt", weights_only=True)["state_dict"]
    assert state and all("lora_" in k for k in state)  # the base is rebuilt from the model source
    restored = DPOModule.load_from_checkpoint(tmp_path / "adapter.ckpt", weights_only=True)
    for (name, a), (_, b) in zip(module.policy.named_parameters(), restored.policy.named_parameters()):
        assert torch.equal(a, b), name


def test_adapter_needs_lora(tiny_model_dir):
    with pytest.raises(ValueError, match="needs a LoRA policy: set model.lora"):
        DPOModule(model_name_or_path=str(tiny_model_dir), reference={"mode": "adapter"}).configure_model()


def test_missing_peft_is_explained(monkeypatch, tiny_model_dir):
    import builtins

    real_import = builtins.__import__

    def no_peft(name, *args, **kwargs):
        if name == "peft" or name.startswith("peft."):
            raise ImportError("No module named 'peft'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_peft)
    with pytest.raises(ImportError, match=r"pip install 'lightning-dpo\[peft\]'"):
        DPOModule(model_name_or_path=str(tiny_model_dir), lora=LORA).configure_model()


def test_tr_dpo_on_a_frozen_copy(tmp_path, tiny_model_dir, tiny_data_dir, make_data, make_trainer):
    module = DPOModule(
        model_name_or_path=str(tiny_model_dir),
        optimizer=adamw,
        reference={"sync": True, "mixup_alpha": 1.0, "sync_steps": 2},
    )
    trainer = make_trainer(max_steps=2)
    trainer.fit(module, make_data())
    for (name, p), (_, r) in zip(module.policy.named_parameters(), module.reference.model.named_parameters()):
        assert torch.equal(p, r), name  # α = 1: a hard update at step 2
    assert all(not p.requires_grad for p in module.reference.parameters())
    trainer.save_checkpoint(tmp_path / "tr.ckpt")
    state = torch.load(tmp_path / "tr.ckpt", weights_only=True)["state_dict"]
    assert any(k.startswith("reference.") for k in state)  # no longer rebuildable from the source
    restored = DPOModule.load_from_checkpoint(tmp_path / "tr.ckpt", weights_only=True)
    assert torch.equal(next(restored.reference.parameters()), next(module.reference.parameters()))


def test_tr_dpo_soft_update_on_the_adapter(tmp_path, tiny_model_dir, tiny_data_dir, make_data, make_trainer):
    module = DPOModule(
        model_name_or_path=str(tiny_model_dir),
        lora=LORA,
        optimizer=adamw,
        reference={"mode": "adapter", "sync": True, "mixup_alpha": 0.5, "sync_steps": 1},
    )
    module.configure_model()
    params = dict(module.policy.named_parameters())
    ref_names = [n for n in params if ".ref." in n]
    assert ref_names and all(not params[n].requires_grad for n in ref_names)
    base = {n: p.clone() for n, p in params.items() if "lora_" not in n}

    class Track(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.before = {n: params[n].clone() for n in ref_names}
            self.trained_before = {n: params[n.replace(".ref.", ".default.")].clone() for n in ref_names}

    track = Track()
    trainer = make_trainer(max_steps=1, callbacks=[track])
    trainer.fit(module, make_data())
    trained = {id(p) for g in trainer.optimizers[0].param_groups for p in g["params"]}
    assert not trained & {id(params[n]) for n in ref_names}
    for n in ref_names:  # ref ← ½·trained + ½·ref, after the optimizer step
        expected = 0.5 * params[n.replace(".ref.", ".default.")] + 0.5 * track.before[n]
        assert torch.allclose(params[n], expected)
    assert any(not torch.equal(params[n], track.before[n]) for n in ref_names)
    for n, p in base.items():
        assert torch.equal(params[n], p)  # the base never changes
    trainer.save_checkpoint(tmp_path / "tr.ckpt")
    state = torch.load(tmp_path / "tr.ckpt", weights_only=True)["state_dict"]
    assert {k for k in state if ".ref." in k} == {f"policy.{n}" for n in ref_names}


@pytest.mark.parametrize("mode", ["none"])
def test_tr_dpo_needs_a_reference_model(mode):
    with pytest.raises(ValueError, match="reference.sync"):
        DPOModule(reference={"mode": mode, "sync": True})


@pytest.mark.parametrize("merge", [False, True])
def test_export_adapter_or_merged(tmp_path, tiny_model_dir, tiny_data_dir, train_batch, merge, make_data, make_trainer):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    module = DPOModule(
        model_name_or_path=str(tiny_model_dir), lora=LORA, reference={"mode": "adapter"}, optimizer=adamw
    )
    make_trainer(max_steps=1, callbacks=[HFExportCallback(merge_adapter=merge)]).fit(module, make_data())
    export = tmp_path / "hf_model"
    if merge:
        loaded = AutoModelForCausalLM.from_pretrained(export)
    else:
        assert (export / "adapter_config.json").exists() and not (export / "model.safetensors").exists()
        loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), export)
    module.policy.eval()
    with torch.no_grad():
        inputs = {"input_ids": train_batch["input_ids"], "attention_mask": train_batch["attention_mask"]}
        expected = module.policy(**inputs).logits
        got = loaded.eval()(**inputs).logits
    assert torch.allclose(got, expected, atol=1e-5)


@pytest.mark.skipif(
    not torch.cuda.is_available() or __import__("importlib").util.find_spec("bitsandbytes") is None,
    reason="QLoRA needs a CUDA GPU and bitsandbytes",
)
def test_qlora_adapter_reference_on_a_gpu(tmp_path, tiny_model_dir, tiny_data_dir, make_data):
    module = DPOModule(
        model_name_or_path=str(tiny_model_dir),
        lora=LORA,
        reference={"mode": "adapter"},
        optimizer=adamw,
        quantization={"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_compute_dtype": "float32"},
    )
    trainer = pl.Trainer(
        accelerator="gpu",
        devices=1,
        max_steps=2,
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        limit_val_batches=0,
    )
    trainer.fit(module, make_data())
    assert module.policy.is_loaded_in_4bit
    assert all("lora_" in n for n, p in module.policy.named_parameters() if p.requires_grad)
