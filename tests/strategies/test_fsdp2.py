"""configs/fsdp2.yaml: FSDP2 through ModelParallelStrategy, fully_shard in DPOModule.configure_model, on 2 CPU
processes (gloo), against one process with the same global batch and seed.

One 2-process script (two fits, about 20 s) serves every assertion here.
"""

from __future__ import annotations

import pytest
import torch
from common import Record, from_config, overrides
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

TOLERANCE = dict(rel=1e-5, abs=1e-5)  # as for DDP (tests/strategies/test_ddp.py)
# Weights after 4 AdamW steps at lr 1e-2: Adam divides by sqrt(v), so where a gradient is near 0 its float
# noise moves the update (measured: 1 of 32,768 embedding entries off by 2.3e-5, 0.2% of one step).
WEIGHT_TOLERANCE = dict(rtol=1e-4, atol=1e-4)


@pytest.fixture(scope="module")
def fsdp2(script_runs) -> dict:
    return script_runs.result("fsdp2_fit.py")


@pytest.fixture(scope="module")
def single(tmp_path_factory, tiny_model_dir, tiny_data_dir) -> dict:
    """The same config on one process: batch 8 x 1 device = the FSDP2 run's 4 x 2 devices."""
    root = tmp_path_factory.mktemp("single")
    cli = from_config(
        "fsdp2.yaml",
        *overrides(str(tiny_model_dir), str(tiny_data_dir), str(root), steps=4),
        "--trainer.devices",
        "1",
        "--trainer.strategy",
        "auto",
        "--data.batch_size",
        "8",
        "--model.gradient_checkpointing",
        "true",
    )
    record = Record()
    cli.trainer.callbacks.append(record)
    cli.trainer.fit(cli.model, cli.datamodule)
    return {**record.result(cli.trainer), "policy": {k: v.clone() for k, v in cli.model.policy.state_dict().items()}}


def test_policy_and_reference_are_sharded_separately(fsdp2):
    a = fsdp2["a"]
    assert a["strategy"] == "ModelParallelStrategy"
    assert a["policy_is_unit"] and a["reference_is_unit"] and not a["module_is_unit"]
    assert a["units"] == 6  # 2 decoder layers + the rest, for each of the two models
    assert a["mixed_units"] == 0  # no unit holds both trainable and frozen weights
    assert a["all_dtensor"] and a["placements"] == ["(Shard(dim=0),)"]
    assert a["embed_rows"] == [1024, 512]  # each rank holds half the rows
    assert not a["reference_requires_grad"] and not a["reference_training"]


def test_optimizer_sees_only_policy_parameters(fsdp2):
    assert fsdp2["a"]["optimizer_is_policy"] and not fsdp2["a"]["optimizer_has_reference"]


def test_gradient_checkpointing_is_on_for_the_policy_only(fsdp2):
    assert fsdp2["a"]["policy_checkpointing"] and not fsdp2["a"]["reference_checkpointing"]


def test_fsdp2_matches_one_process(fsdp2, single):
    assert fsdp2["a"]["losses"] == pytest.approx(single["losses"], **TOLERANCE)
    assert fsdp2["a"]["losses"][-1] < fsdp2["a"]["losses"][0]
    for name, value in single["val"].items():
        assert fsdp2["a"]["val"][name] == pytest.approx(value, **TOLERANCE), name


def test_sharded_checkpoint_resumes_exactly(fsdp2):
    assert fsdp2["checkpoint"]["is_dir"]  # one folder: a shard per rank plus metadata
    assert {"__0_0.distcp", "__1_0.distcp", "meta.pt"} <= set(fsdp2["checkpoint"]["files"])
    assert fsdp2["b"]["losses"] == pytest.approx(fsdp2["a"]["losses"][2:], abs=1e-6)
    a = load_file(f"{fsdp2['a']['exported']}/model.safetensors")
    b = load_file(f"{fsdp2['b']['exported']}/model.safetensors")
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)


def test_export_gathers_the_full_policy_on_rank_zero(fsdp2, single):
    exported = AutoModelForCausalLM.from_pretrained(fsdp2["a"]["exported"]).state_dict()
    for key, value in single["policy"].items():
        assert exported[key].shape == value.shape  # full tensors, not one rank's shard
        torch.testing.assert_close(exported[key], value, **WEIGHT_TOLERANCE)
