"""configs/ddp.yaml on 2 CPU processes (gloo) against one process with the same global batch and seed.

One DDP run (about 20 s) serves every assertion here.
"""

from __future__ import annotations

import pytest
import torch
from common import Record, from_config, overrides
from transformers import AutoModelForCausalLM

# |DDP - one process| <= max(1e-5, 1e-5 x |value|). Measured 2026-11-27 on a 2-core CPU: train losses within
# 5e-8; val/* within 7.6e-6 (val/logps/chosen, a sum of about -99: 8e-8 relative), all others within 7e-7.
# The residue is float summation order (per-rank padding, the gradient all-reduce), not a different computation.
TOLERANCE = dict(rel=1e-5, abs=1e-5)
WEIGHT_TOLERANCE = dict(rtol=1e-4, atol=1e-4)  # see tests/strategies/test_fsdp2.py


@pytest.fixture(scope="module")
def ddp(script_runs) -> dict:
    return script_runs.result("ddp_fit.py")


@pytest.fixture(scope="module")
def single(tmp_path_factory, tiny_model_dir, tiny_data_dir) -> dict:
    """The same config on one process: batch 16 x 1 device = the DDP run's 8 x 2 devices."""
    root = tmp_path_factory.mktemp("single")
    cli = from_config(
        "ddp.yaml",
        *overrides(str(tiny_model_dir), str(tiny_data_dir), str(root), steps=3),
        "--trainer.devices",
        "1",
        "--trainer.strategy",
        "auto",
        "--data.batch_size",
        "16",
    )
    record = Record()
    cli.trainer.callbacks.append(record)
    cli.trainer.fit(cli.model, cli.datamodule)
    return {**record.result(cli.trainer), "policy": {k: v.clone() for k, v in cli.model.policy.state_dict().items()}}


def test_ddp_losses_and_metrics_match_one_process(ddp, single):
    assert ddp["world_size"] == 2 and ddp["global_batch"] == 16  # data.batch_size 8 per device x 2 devices
    assert ddp["losses"] == pytest.approx(single["losses"], **TOLERANCE)
    assert ddp["losses"][-1] < ddp["losses"][0]  # it trained: a match of untrained runs would prove nothing
    assert ddp["val"].keys() == single["val"].keys()
    for name, value in single["val"].items():
        assert ddp["val"][name] == pytest.approx(value, **TOLERANCE), name


def test_val_metrics_reduce_across_ranks(ddp):
    """val/* are torchmetrics: the logged margin is the mean over both ranks' pairs, not rank 0's."""
    rank0, rank1 = ddp["rank_margins"]
    assert rank0 != pytest.approx(rank1, rel=1e-3)  # the shares differ, so a per-rank value would show
    assert ddp["val"]["val/rewards/margins"] == pytest.approx((rank0 + rank1) / 2, rel=1e-5)


def test_frozen_reference_gets_no_gradient_buckets(ddp):
    assert ddp["ddp_class"] == "DistributedDataParallel"
    assert ddp["reducer_tensors"] == ddp["policy_trainable_tensors"]
    assert ddp["reducer_bytes"] == ddp["bucket_bytes"] == ddp["policy_trainable_bytes"]
    assert not ddp["reference_requires_grad"] and not ddp["reference_training"]


def test_rank_zero_exports_the_trained_policy(ddp, single):
    exported = AutoModelForCausalLM.from_pretrained(ddp["exported"]).state_dict()
    for key, value in single["policy"].items():
        torch.testing.assert_close(exported[key], value, **WEIGHT_TOLERANCE)
