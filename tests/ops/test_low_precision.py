"""A frozen model stored in bf16 and computed in fp32: the same numbers as fp32 maths on bf16-rounded
weights, parameters narrow between calls, buffers untouched."""

from __future__ import annotations

import copy

import pytest
import torch

from lightning_dpo.ops.low_precision import store_parameters_in


@pytest.mark.parametrize("name", ["llama-tied", "qwen2"])
def test_bf16_storage_computes_fp32_on_rounded_weights(make_model, name):
    model = make_model(name).eval().requires_grad_(False)
    rounded = copy.deepcopy(model)
    for p in rounded.parameters():
        p.data = p.data.bfloat16().float()
    buffers = {n: b.clone() for n, b in model.named_buffers()}
    n = sum(p.numel() for p in rounded.parameters())  # tied weights once
    assert store_parameters_in(model, torch.bfloat16) == 2 * n
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())
    ids = torch.randint(0, 97, (2, 9))
    with torch.no_grad():
        out = model(input_ids=ids).logits
        expected = rounded(input_ids=ids).logits
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-6)
    assert all(p.dtype == torch.bfloat16 for p in model.parameters())  # narrow again after the call
    for n_, b in model.named_buffers():  # rotary frequencies keep their precision
        assert b.dtype == buffers[n_].dtype and torch.equal(b, buffers[n_])


def test_refuses_trainable_parameters(make_model):
    with pytest.raises(ValueError, match="frozen"):
        store_parameters_in(make_model("llama"), torch.bfloat16)


def test_already_narrow_weights_are_left_alone(make_model):
    model = make_model("llama", dtype=torch.bfloat16).requires_grad_(False)
    assert store_parameters_in(model, torch.bfloat16) == 0
    assert not model.model.layers[0].mlp.up_proj._forward_pre_hooks
