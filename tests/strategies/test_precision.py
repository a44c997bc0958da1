"""Precision on a CPU: bf16-mixed and bf16-true train, the log-prob and loss maths stays fp32, 16-mixed
becomes bf16-mixed; gradient checkpointing is the policy's only; torch.compile of the policy is wired."""

from __future__ import annotations

import math

import pytest
import torch
from common import make_data

from lightning_dpo import DPOModule
from lightning_dpo.namespace import pl


class Dtypes(pl.Callback):
    """The dtypes of what the first training step touched."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if batch_idx == 0:
            _, stats = pl_module.dpo_step(batch)
            self.seen = {
                "loss": outputs["loss"].dtype,
                "logps": stats["logps/chosen"].values.dtype,
                "rewards": stats["rewards/chosen"].values.dtype,
                "policy": {p.dtype for p in pl_module.policy.parameters()},
                "reference": {p.dtype for p in pl_module.reference.model.parameters()},
            }
            self.loss = outputs["loss"].item()


def fit(tmp_path, model_dir, data_dir, precision: str, **module_kwargs) -> tuple[DPOModule, Dtypes]:
    module = DPOModule(
        model_name_or_path=str(model_dir),
        optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2),
        lr_scheduler=None,
        **module_kwargs,
    )
    dtypes = Dtypes()
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        precision=precision,
        max_steps=2,
        limit_val_batches=1,
        val_check_interval=2,
        num_sanity_val_steps=0,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[dtypes],
    )
    trainer.fit(module, make_data(str(model_dir), str(data_dir), batch_size=4))
    assert math.isfinite(trainer.callback_metrics["val/loss"].item())
    return module, dtypes


@pytest.mark.parametrize("precision, weights", [("bf16-mixed", torch.float32), ("bf16-true", torch.bfloat16)])
def test_bf16_trains_with_fp32_log_probs_and_loss(tmp_path, tiny_model_dir, tiny_data_dir, precision, weights):
    module, dtypes = fit(tmp_path, tiny_model_dir, tiny_data_dir, precision)
    assert dtypes.seen["policy"] == dtypes.seen["reference"] == {weights}
    assert dtypes.seen["loss"] == dtypes.seen["logps"] == dtypes.seen["rewards"] == torch.float32
    assert dtypes.loss == pytest.approx(math.log(2), abs=1e-6)  # policy = reference at step 0, even in bf16


def test_bf16_true_loads_weights_in_bf16(tiny_model_dir):
    """Under bf16-true Lightning runs configure_model with bf16 as the default dtype: from_pretrained then
    loads bf16 weights directly (no fp32 copy first); the reference is a copy of them."""
    module = DPOModule(model_name_or_path=str(tiny_model_dir))
    with pl.plugins.precision.HalfPrecision("bf16-true").tensor_init_context():
        module.configure_model()
    assert {p.dtype for p in module.policy.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in module.reference.model.parameters()} == {torch.bfloat16}
    assert torch.get_default_dtype() == torch.float32  # the context put it back


def test_16_mixed_becomes_bf16_mixed_on_cpu():
    with pytest.warns(UserWarning, match="fp16 is not supported on CPU"):
        trainer = pl.Trainer(accelerator="cpu", precision="16-mixed", logger=False)
    assert trainer.precision == "bf16-mixed"


def count_checkpointed_calls(model: torch.nn.Module) -> list[int]:
    """Wrap every decoder layer's checkpoint function with a counter; returns the (shared) count."""
    count = [0]
    for layer in model.model.layers:
        inner = layer._gradient_checkpointing_func

        def counted(*args, _inner=inner, **kwargs):
            count[0] += 1
            return _inner(*args, **kwargs)

        layer._gradient_checkpointing_func = counted
    return count


@pytest.mark.parametrize("mode", ["frozen", "adapter"])
def test_gradient_checkpointing_is_the_policys_only(tiny_model_dir, tiny_data_dir, mode):
    lora = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]} if mode == "adapter" else None
    if lora:
        pytest.importorskip("peft")
    kwargs = dict(model_name_or_path=str(tiny_model_dir), reference={"mode": mode}, lora=lora)
    module, plain = DPOModule(gradient_checkpointing=True, **kwargs), DPOModule(**kwargs)
    for m in (module, plain):
        torch.manual_seed(0)  # the same LoRA initialisation in both
        m.configure_model()
    base = module.policy.get_base_model() if lora else module.policy
    assert all(layer.gradient_checkpointing for layer in base.model.layers)
    if mode == "frozen":
        assert not any(layer.gradient_checkpointing for layer in module.reference.model.model.layers)
    count = count_checkpointed_calls(base)
    data = make_data(str(tiny_model_dir), str(tiny_data_dir), batch_size=4)
    data.setup("fit")
    batch = next(iter(data.train_dataloader()))
    module.reference.logps(
        batch, module.logps_options
    )  # the no-grad reference pass (under adapter: the policy's own layers)
    assert count[0] == 0
    loss, _ = module.dpo_step(batch)
    assert count[0] == len(base.model.layers)  # the policy pass checkpointed each layer once, the reference pass none
    loss.backward()
    plain_loss, _ = plain.dpo_step(batch)
    plain_loss.backward()
    assert loss.item() == pytest.approx(plain_loss.item(), abs=1e-7)
    for (name, p), q in zip(module.policy.named_parameters(), plain.policy.parameters()):
        if p.requires_grad:
            torch.testing.assert_close(p.grad, q.grad, rtol=1e-5, atol=1e-7, msg=name)


def test_compile_is_applied_to_the_policy_only(tiny_model_dir, tiny_data_dir):
    """``compile`` takes torch.compile's keyword arguments; the ``eager`` backend keeps the test fast (the default
    inductor backend compiles C++ and takes minutes on 2 cores), while dynamo still traces the policy."""
    module = DPOModule(model_name_or_path=str(tiny_model_dir), compile={"backend": "eager"})
    module.configure_model()
    assert module.policy._compiled_call_impl is not None
    assert module.reference.model._compiled_call_impl is None
    data = make_data(str(tiny_model_dir), str(tiny_data_dir), batch_size=4)
    data.setup("fit")
    loss, _ = module.dpo_step(next(iter(data.train_dataloader())))
    loss.backward()
    assert loss.item() == pytest.approx(math.log(2), abs=1e-5)
    assert all(p.grad is not None for p in module.policy.parameters())
