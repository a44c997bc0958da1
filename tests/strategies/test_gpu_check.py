"""scripts/gpu_check.py runs on a GPU only; here: it imports, parses, builds the right shape, refuses a CPU."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def gpu_check(load_script):
    return load_script("scripts/gpu_check.py")


def test_it_parses_and_lists_the_runs(gpu_check):
    args = gpu_check.parse_args([])
    assert (args.steps, args.pairs, args.max_length) == (12, 8, 512)
    assert args.runs == ["bf16-mixed", "bf16-true+ckpt", "fsdp2+bf16-true+ckpt", "fsdp1+bf16-mixed+ckpt"]
    assert all(spec["gradient_checkpointing"] for name, spec in gpu_check.RUNS.items() if "ckpt" in name)


def test_the_model_is_shaped_like_qwen25_05b(gpu_check):
    config = gpu_check.qwen25_05b_config()
    assert gpu_check.parameter_count(config) == 494_032_768  # Qwen2.5-0.5B's count, tied embeddings


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without a GPU")
def test_it_refuses_without_a_gpu(gpu_check, capsys):
    assert gpu_check.main(["--steps", "3"]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err
