"""The fused, chunked LM head against full logits: values and gradients, and what it never allocates."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_dpo.ops import fused_head
from lightning_dpo.ops.fused_head import auto_chunk_size, fused_head_logps, reference_head_logps


def inputs(k=11, h=8, v=37, bias=False, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(k, h, generator=g, dtype=dtype).requires_grad_()
    weight = torch.randn(v, h, generator=g, dtype=dtype).requires_grad_()
    b = torch.randn(v, generator=g, dtype=dtype).requires_grad_() if bias else None
    labels = torch.randint(0, v, (k,), generator=g)
    upstream = torch.randn(k, generator=g, dtype=dtype)  # a gradient that differs per token
    return hidden, weight, b, labels, upstream


def grads(out, upstream, tensors):
    return torch.autograd.grad((out.logps * upstream).sum(), [t for t in tensors if t is not None])


@pytest.mark.parametrize("chunk", [1, 4, 11, 64])
@pytest.mark.parametrize(
    "transform", [{}, {"softcap": 3.0}, {"logit_scale": 0.25}, {"logit_scale": 2.0, "softcap": 5.0}], ids=str
)
@pytest.mark.parametrize("bias", [False, True])
def test_matches_full_logits_values_and_gradients(chunk, transform, bias):
    hidden, weight, b, labels, upstream = inputs(bias=bias)
    ref = reference_head_logps(hidden, weight, b, labels, with_wpo=True, with_stats=True, **transform)
    out = fused_head_logps(hidden, weight, b, labels, chunk_size=chunk, with_wpo=True, with_stats=True, **transform)
    for name in ("logps", "mean_logits", "log_sum_sq", "entropy"):
        torch.testing.assert_close(getattr(out, name), getattr(ref, name), rtol=1e-5, atol=1e-5, msg=name)
    assert torch.equal(out.is_top1, ref.is_top1)
    for fast, slow in zip(grads(out, upstream, (hidden, weight, b)), grads(ref, upstream, (hidden, weight, b))):
        torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-5)
    assert not any(t.requires_grad for t in (out.mean_logits, out.log_sum_sq, out.entropy))


def test_entropy_and_top1_by_hand():
    """Two tokens, vocabulary 3: uniform logits (entropy ln 3, any argmax) and peaked ones."""
    z = torch.tensor([[0.0, 0.0, 0.0], [10.0, 0.0, 0.0]], dtype=torch.float64)  # (K=2, V=3) = eye(2) @ z
    hidden, weight, labels = torch.eye(2, dtype=torch.float64), z.T.contiguous(), torch.tensor([2, 0])
    out = fused_head_logps(hidden, weight, None, labels, with_stats=True)
    p = torch.tensor([1.0, math.exp(-10), math.exp(-10)], dtype=torch.float64)
    p = p / p.sum()  # softmax([10, 0, 0])
    expected = torch.tensor([math.log(3), float(-(p * p.log()).sum())], dtype=torch.float64)
    torch.testing.assert_close(out.entropy, expected, rtol=1e-12, atol=1e-12)
    assert out.is_top1.tolist() == [False, True]  # uniform: argmax is token 0, not the target 2
    plain = fused_head_logps(hidden, weight, None, labels)
    assert plain.entropy is None and plain.is_top1 is None  # not asked for: not computed


def test_float64_is_exact_to_rounding():
    hidden, weight, b, labels, upstream = inputs(dtype=torch.float64, bias=True)
    ref = reference_head_logps(hidden, weight, b, labels, softcap=4.0)
    out = fused_head_logps(hidden, weight, b, labels, chunk_size=3, softcap=4.0)
    assert out.logps.dtype == torch.float64
    torch.testing.assert_close(out.logps, ref.logps, rtol=1e-12, atol=1e-12)
    for fast, slow in zip(grads(out, upstream, (hidden, weight, b)), grads(ref, upstream, (hidden, weight, b))):
        torch.testing.assert_close(fast, slow, rtol=1e-12, atol=1e-12)


def test_only_what_needs_a_gradient_gets_one():
    hidden, weight, _, labels, upstream = inputs()
    frozen = weight.detach()  # a frozen head (e.g. LoRA on the body only)
    out = fused_head_logps(hidden, frozen, None, labels, chunk_size=4)
    (g,) = torch.autograd.grad((out.logps * upstream).sum(), [hidden])
    ref = reference_head_logps(hidden, frozen, None, labels)
    torch.testing.assert_close(g, torch.autograd.grad((ref.logps * upstream).sum(), [hidden])[0])
    with torch.no_grad():  # the reference model's pass: nothing saved, same values
        torch.testing.assert_close(fused_head_logps(hidden, weight, None, labels).logps, ref.logps)


def test_logits_exist_only_chunk_by_chunk(monkeypatch):
    """Every block of logits, forward and backward, has at most ``chunk`` rows: never (K, V) at once."""
    shapes = []
    original = fused_head._block

    def recording(h, *args):
        z = original(h, *args)
        shapes.append(tuple(z.shape))
        return z

    monkeypatch.setattr(fused_head, "_block", recording)
    hidden, weight, _, labels, upstream = inputs(k=23, v=50)
    out = fused_head_logps(hidden, weight, None, labels, chunk_size=5)
    (out.logps * upstream).sum().backward()
    assert shapes and all(rows <= 5 and vocab == 50 for rows, vocab in shapes)
    assert len(shapes) == 2 * 5  # 5 chunks forward, 5 recomputed backward


def test_auto_chunk_size_shrinks_with_the_vocabulary_down_to_a_floor_and_balances_chunks():
    assert auto_chunk_size(8192) == 4096 and auto_chunk_size(131072) == 256 and auto_chunk_size(151936) == 220
    assert auto_chunk_size(10**9) == fused_head.MIN_CHUNK_ROWS  # short GEMMs waste the matmul units
    assert auto_chunk_size(151936, tokens=564) == 188  # 3 chunks of 188, not 220 + 220 + 124
    assert auto_chunk_size(151936, tokens=100) == 100 and auto_chunk_size(151936, tokens=0) == 1


def test_a_narrower_stored_head_is_upcast_slice_by_slice(monkeypatch):
    """A bf16-stored head under fp32 hidden states (a bf16 reference computed in fp32): the same values as the
    head upcast whole, without a full-precision copy of it."""
    monkeypatch.setattr(fused_head, "UPCAST_SLICE_ROWS", 16)
    hidden, weight, b, labels, _ = inputs(k=9, h=8, v=50, bias=True)
    stored, stored_bias = weight.detach().bfloat16(), b.detach().bfloat16()
    casts = []
    to = torch.Tensor.to
    monkeypatch.setattr(torch.Tensor, "to", lambda t, *a, **k: casts.append(tuple(t.shape)) or to(t, *a, **k))
    with torch.no_grad():
        out = fused_head_logps(hidden.detach(), stored, stored_bias, labels, with_stats=True)
    monkeypatch.setattr(torch.Tensor, "to", to)
    assert (50, 8) not in casts and (16, 8) in casts  # never the whole (V, H) head
    ref = reference_head_logps(hidden.detach(), stored.float(), stored_bias.float(), labels, with_stats=True)
    for name in ("logps", "mean_logits", "entropy"):
        torch.testing.assert_close(getattr(out, name), getattr(ref, name), rtol=1e-6, atol=1e-6, msg=name)


def test_no_tokens():
    hidden, weight, _, labels, _ = inputs(k=0)
    out = fused_head_logps(hidden, weight, None, labels)
    assert out.logps.shape == (0,)
    out.logps.sum().backward()
    assert weight.grad is not None and not weight.grad.any()


def test_bf16_autocast_close_to_full_logits():
    """Under CPU bf16 autocast the head matmul runs in bf16 (as the model's own would); the maths in fp32."""
    hidden, weight, _, labels, _ = inputs(k=16, h=32, v=64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = fused_head_logps(hidden, weight, None, labels, chunk_size=5)
        ref = reference_head_logps(hidden, weight, None, labels)
    assert out.logps.dtype == torch.float32
    torch.testing.assert_close(out.logps, ref.logps, rtol=0, atol=1e-6)  # the same bf16 products
    out.logps.sum().backward()
    assert weight.grad.dtype == torch.float32 and torch.isfinite(weight.grad).all()
