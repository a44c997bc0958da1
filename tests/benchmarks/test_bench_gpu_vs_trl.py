"""benchmarks/bench_gpu_vs_trl.py runs on a GPU only; here: its model shape and its FLOP count."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def bench(load_script):
    return load_script("benchmarks/bench_gpu_vs_trl.py")


def test_the_model_is_shaped_like_qwen25_05b(bench):
    from transformers import AutoModelForCausalLM

    from lightning_dpo.embedded import DEFAULT_MODEL
    from lightning_dpo.models import load_tokenizer

    config = bench.qwen_config(bench.SHAPE, load_tokenizer(DEFAULT_MODEL))
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    assert sum(p.numel() for p in model.parameters()) == 494_032_768  # Qwen2.5-0.5B's count, tied embeddings
    assert (bench.SHAPE.max_length, bench.SHAPE.pairs) == (1024, 8)


def test_step_flops_counts_both_models_and_causal_attention(bench):
    shape = bench.SHAPE
    row = {"prompt_input_ids": [1] * 3, "chosen_input_ids": [2] * 2, "rejected_input_ids": [3]}
    # Two sequences of 5 and 4 tokens: 8N per token, attention Σ_p 4·layers·hidden·(p + 1), ×(3 + 1).
    attention = sum(4 * shape.layers * shape.hidden * (p + 1) for length in (5, 4) for p in range(length))
    assert bench.step_flops(1000, shape, [row]) == pytest.approx(8 * 1000 * 9 + 4 * attention)


def test_peak_by_device_name(bench):
    assert bench.peak_tflops("NVIDIA H100 80GB HBM3") == 989.0
    assert bench.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert bench.peak_tflops("NVIDIA H200") == 989.0
    assert bench.peak_tflops("Some other GPU") is None
