"""lightning_dpo.sharding and the module's sharding hooks, without processes: unit layout, mesh checks,
the ZeRO-3 reference, export guards."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from transformers import AutoModelForCausalLM

from lightning_dpo import DPOModule
from lightning_dpo.callbacks.export import save_policy
from lightning_dpo.reference import FrozenReference
from lightning_dpo.sharding import DPOAutoWrapPolicy, full_policy_state_dict, hf_deepspeed_zero3, transformer_blocks


@pytest.fixture
def model(tiny_model_dir) -> nn.Module:
    return AutoModelForCausalLM.from_pretrained(tiny_model_dir)


def test_blocks_are_the_decoder_layers(model):
    assert transformer_blocks(model) == list(model.model.layers)


def test_fsdp1_policy_wraps_whole_models_and_layers(model):
    policy = DPOAutoWrapPolicy()
    assert policy(model, recurse=True, nonwrapped_numel=0)  # always looks inside
    assert policy(model, recurse=False, nonwrapped_numel=0)  # the causal LM: its own unit
    assert policy(model.model.layers[0], recurse=False, nonwrapped_numel=0)
    assert not policy(model.model, recurse=False, nonwrapped_numel=0)  # tied embeddings stay with the LM head
    assert not policy(model.lm_head, recurse=False, nonwrapped_numel=0)
    assert DPOAutoWrapPolicy(["Linear"])(model.lm_head, recurse=False, nonwrapped_numel=0)


def test_unsharded_policy_needs_no_gathering(model):
    assert full_policy_state_dict(model, root=model) is None


class FakeMesh:
    """A 2-D device mesh as ModelParallelStrategy builds it (data_parallel x tensor_parallel)."""

    mesh_dim_names = ("data_parallel", "tensor_parallel")

    def __init__(self, dp: int, tp: int) -> None:
        self.sizes = {"data_parallel": dp, "tensor_parallel": tp}

    def __getitem__(self, name):
        size = self.sizes[name]
        return type("Sub", (), {"size": lambda self: size, "name": name})()


def test_tensor_parallelism_is_refused_with_a_fix(tiny_model_dir):
    module = DPOModule(model_name_or_path=str(tiny_model_dir))
    module._device_mesh = FakeMesh(dp=1, tp=2)
    with pytest.raises(ValueError, match="tensor_parallel_size: 1"):
        module.configure_model()
    module._device_mesh = FakeMesh(dp=2, tp=1)
    assert module._data_parallel_mesh().name == "data_parallel"


def test_zero3_reference_is_loaded_again_not_copied(model):
    """A ZeRO-3-partitioned policy holds empty tensors: the frozen reference re-loads the source instead."""
    reloaded = AutoModelForCausalLM.from_config(model.config)
    reference = FrozenReference(reload=lambda: reloaded)
    next(model.parameters()).ds_id = 0  # what deepspeed.zero.Init marks partitioned parameters with
    reference.prepare(model)
    assert reference.model is reloaded and not reference.model.training
    assert not any(p.requires_grad for p in reference.model.parameters())
    plain = FrozenReference(reload=lambda: pytest.fail("an unpartitioned policy is deep-copied"))
    del next(model.parameters()).ds_id
    plain.prepare(model)
    assert plain.model is not model


def _strategy(class_name: str, config: dict | None) -> object:
    """A stand-in with a strategy's class name and DeepSpeed config, read as ``zero3_enabled`` reads the real ones."""
    return type(class_name, (), {"config": config})()


ZERO3 = {"zero_optimization": {"stage": 3}}


@pytest.fixture
def held_configs(monkeypatch) -> list:
    """The configs the context hands to transformers' ``HfDeepSpeedConfig`` (recorded, not built: no deepspeed)."""
    held = []
    monkeypatch.setattr("transformers.integrations.HfDeepSpeedConfig", lambda config: held.append(config))
    return held


@pytest.mark.parametrize(
    "strategy",
    [
        None,
        _strategy("DDPStrategy", None),
        _strategy("DeepSpeedStrategy", {"zero_optimization": {"stage": 2}}),
        _strategy("FSDPStrategy", ZERO3),  # a ZeRO-3-looking config on another strategy
    ],
    ids=["none", "ddp", "zero2", "not-deepspeed"],
)
def test_zero3_context_is_a_no_op_elsewhere(strategy, held_configs, tiny_model_dir, model):
    from transformers.integrations import is_deepspeed_zero3_enabled

    with hf_deepspeed_zero3(strategy):
        assert not is_deepspeed_zero3_enabled()
        inside = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    assert held_configs == []
    assert all(torch.equal(a, b) for a, b in zip(inside.state_dict().values(), model.state_dict().values()))


def test_zero3_context_hands_the_strategy_s_config_to_transformers(held_configs):
    strategy = _strategy("DeepSpeedStrategy", ZERO3)
    with hf_deepspeed_zero3(strategy):
        assert held_configs == [strategy.config]


def test_merging_a_sharded_lora_policy_is_refused_with_a_fix(tmp_path, tiny_model_dir):
    pytest.importorskip("peft")
    module = DPOModule(
        model_name_or_path=str(tiny_model_dir),
        reference={"mode": "adapter"},
        lora={"r": 2, "target_modules": ["q_proj"]},
    )
    module.configure_model()
    with pytest.raises(ValueError, match="merge_adapter: false"):
        save_policy(module.policy, str(tmp_path), merge_adapter=True, state_dict={})
    save_policy(module.policy, str(tmp_path / "adapter"), state_dict=module.policy.state_dict())  # a gathered dict
    assert (tmp_path / "adapter" / "adapter_model.safetensors").exists()
