"""DPOModule: the first step, what trains and what stays frozen, checkpoints."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_dpo import DPOModule
from lightning_dpo.namespace import pl
from lightning_dpo.optim import LinearWarmup, PaperRMSprop


def adamw(params):
    return torch.optim.AdamW(params, lr=1e-2)


def test_policy_equal_to_reference_gives_ln2_and_zero_rewards(tiny_model_dir, train_batch):
    module = DPOModule(model_name_or_path=str(tiny_model_dir))
    module.configure_model()
    loss, stats = module.dpo_step(train_batch)
    assert loss.item() == pytest.approx(math.log(2), abs=1e-7)
    assert torch.equal(stats["rewards/margins"].values, torch.zeros(4))
    assert stats["rewards/accuracies"].values.sum() == 0  # ties count 0, as in TRL


def test_dropout_is_disabled_in_both_models(tiny_model_dir):
    module = DPOModule(model_name_or_path=str(tiny_model_dir))
    module.configure_model()
    for model in (module.policy, module.reference.model):
        assert all(m.attention_dropout == 0.0 for m in model.modules() if hasattr(m, "attention_dropout"))
    assert module.policy.training and not module.reference.model.training


def test_configure_model_is_idempotent(tiny_model_dir):
    module = DPOModule(model_name_or_path=str(tiny_model_dir))
    module.configure_model()
    policy, reference = module.policy, module.reference.model
    module.configure_model()
    assert module.policy is policy and module.reference.model is reference


def test_fit_trains_policy_only_and_checkpoint_excludes_reference(tmp_path, tiny_model_dir, make_data, make_trainer):
    module = DPOModule(model_name_or_path=str(tiny_model_dir), optimizer=adamw, lr_scheduler=None)
    module.configure_model()
    policy_before = {k: v.clone() for k, v in module.policy.state_dict().items()}
    reference_before = {k: v.clone() for k, v in module.reference.model.state_dict().items()}
    trainer = make_trainer(max_steps=3, limit_val_batches=2, callbacks=[FirstLoss()])
    trainer.fit(module, make_data())

    assert trainer.callbacks[0].loss == pytest.approx(math.log(2), abs=1e-6)
    shown = {"train/loss", "train/rewards/margins", "train/rewards/accuracies"}  # the progress bar
    assert shown <= set(trainer.progress_bar_metrics)
    assert trainer.callback_metrics["train/learning_rate"].item() == pytest.approx(1e-2)  # no LR monitor needed
    policy_after = module.policy.state_dict()
    assert any(not torch.equal(policy_before[k], policy_after[k]) for k in policy_before)
    reference_after = module.reference.model.state_dict()
    assert all(torch.equal(reference_before[k], reference_after[k]) for k in reference_before)
    assert not module.reference.model.training
    assert all(p.grad is None for p in module.reference.parameters())
    optimizer_params = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert optimizer_params == {id(p) for p in module.policy.parameters()}

    path = tmp_path / "last.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=True)  # hyperparameters are primitives
    assert not any(k.startswith("reference.") for k in checkpoint["state_dict"])
    assert any(k.startswith("policy.") for k in checkpoint["state_dict"])

    restored = DPOModule.load_from_checkpoint(path, weights_only=True)
    for key, value in module.policy.state_dict().items():
        assert torch.equal(restored.policy.state_dict()[key], value)
    # The reference is rebuilt from the model source: the original SFT weights, not the trained policy.
    for key, value in reference_before.items():
        assert torch.equal(restored.reference.model.state_dict()[key], value)


class FirstLoss(pl.Callback):
    loss: float | None = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if self.loss is None:
            self.loss = outputs["loss"].item()


def test_reference_free_mode_loads_no_reference(tiny_model_dir, train_batch):
    module = DPOModule(model_name_or_path=str(tiny_model_dir), reference={"mode": "none"})
    module.configure_model()
    assert not list(module.reference.parameters())
    loss, stats = module.dpo_step(train_batch)
    chosen, rejected = stats["logps/chosen"].values, stats["logps/rejected"].values
    expected = -torch.nn.functional.logsigmoid(0.1 * (chosen - rejected)).mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


def test_separate_reference_must_share_the_vocabulary(tmp_path, tiny_model_dir):
    from transformers import AutoConfig, LlamaForCausalLM

    config = AutoConfig.from_pretrained(tiny_model_dir)
    config.vocab_size += 7
    LlamaForCausalLM(config).save_pretrained(tmp_path / "other")
    module = DPOModule(
        model_name_or_path=str(tiny_model_dir), reference={"model_name_or_path": str(tmp_path / "other")}
    )
    with pytest.raises(ValueError, match="must share a tokenizer"):
        module.configure_model()


def test_separate_reference_is_loaded_and_frozen(tiny_model_dir, embedded_model_dir, train_batch):
    module = DPOModule(
        model_name_or_path=str(tiny_model_dir), reference={"model_name_or_path": str(embedded_model_dir)}
    )
    module.configure_model()
    assert module.reference.model.config.hidden_size != module.policy.config.hidden_size
    assert not any(p.requires_grad for p in module.reference.parameters())
    loss, _ = module.dpo_step(train_batch)
    assert torch.isfinite(loss) and loss.item() != pytest.approx(math.log(2))


def test_paper_defaults():
    module = DPOModule()
    assert module.loss_settings.beta == 0.1 and module.loss_settings.type == "sigmoid"
    assert module.hparams.loss == {**module.hparams.loss, "beta": 0.1, "type": "sigmoid"}  # a plain dict
    optimizer = module.optimizer_factory([torch.nn.Parameter(torch.zeros(1))])
    assert isinstance(optimizer, torch.optim.RMSprop) and optimizer.defaults["lr"] == 1e-6
    scheduler = module.lr_scheduler_factory(optimizer)
    assert isinstance(scheduler, LinearWarmup) and scheduler.warmup_steps == 150
    assert module.optimizer_factory is PaperRMSprop


def test_linear_warmup_factor():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = LinearWarmup(optimizer, warmup_steps=3)
    lrs = []
    for _ in range(5):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0])


def test_reference_free_loss_rejects_an_explicit_reference():
    from lightning_dpo.losses import LOSSES, register_loss

    register_loss("test-free", uses_reference=False)(lambda x: x.chosen_logratios)
    try:
        assert DPOModule(loss={"type": "test-free"}).reference.name == "none"
        with pytest.raises(ValueError, match="reference-free"):
            DPOModule(loss={"type": "test-free"}, reference={"mode": "frozen"})
    finally:
        LOSSES.pop("test-free")
