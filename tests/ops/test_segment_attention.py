"""Span attention over a packed row against a dense masked attention, and the sdpa switch."""

from __future__ import annotations

import math

import pytest
import torch

from lightning_dpo.ops.segment_attention import (
    NAME,
    attention_kind,
    enable_segment_attention,
    segment_attention_forward,
)


class _Attention:
    num_key_value_groups = 2


def dense(query, key, value, spans, window=None):
    """Every span's rule written as one (S, S) mask: causal within the span, all of its prefix."""
    s = query.shape[2]
    allowed = torch.zeros(s, s, dtype=torch.bool)
    for start, end, prefix_start, prefix_end in spans:
        for i in range(start, end):
            allowed[i, prefix_start:prefix_end] = True
            allowed[i, start : i + 1] = True
            if window is not None:  # by positions within prefix + span
                positions = torch.cat(
                    [torch.arange(prefix_end - prefix_start), prefix_end - prefix_start + torch.arange(i - start + 1)]
                )
                q_pos = prefix_end - prefix_start + i - start
                keys = torch.cat([torch.arange(prefix_start, prefix_end), torch.arange(start, i + 1)])
                allowed[i, keys[q_pos - positions >= window]] = False
    groups = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(groups, 1), value.repeat_interleave(groups, 1)
    scores = (query @ key.transpose(-1, -2)) / math.sqrt(query.shape[-1])
    return (scores.masked_fill(~allowed, float("-inf")).softmax(-1) @ value).transpose(1, 2)


SPANS = ((0, 7, 0, 0), (7, 9, 0, 4), (9, 13, 9, 9), (13, 19, 9, 11), (19, 20, 19, 19))


@pytest.mark.parametrize("window", [None, 3])
def test_spans_match_a_dense_mask_values_and_gradients(window):
    torch.manual_seed(0)
    s = SPANS[-1][1]
    # (1, S, H, D) transposed, as attention layers produce them; grouped-query: 4 query heads, 2 key/value heads
    q, k, v = (torch.randn(1, s, h, 8, dtype=torch.float64, requires_grad=True) for h in (4, 2, 2))
    args = [t.transpose(1, 2) for t in (q, k, v)]
    out, _ = segment_attention_forward(_Attention(), *args, None, lightning_dpo_spans=SPANS, sliding_window=window)
    ref = dense(*args, SPANS, window)
    torch.testing.assert_close(out, ref)
    w = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad((out * w).sum(), (q, k, v)), torch.autograd.grad((ref * w).sum(), (q, k, v))):
        torch.testing.assert_close(a, b)


def test_grouped_query_heads_are_never_repeated_and_slices_are_not_per_span(monkeypatch):
    """The fast path: SDPA takes the key/value heads as they are, and each tensor is split once (a slice per
    span would zero-fill a full-row gradient per span in backward)."""
    import lightning_dpo.ops.segment_attention as sa

    if not sa._SDPA_GQA:
        pytest.skip("torch < 2.5 has no enable_gqa")

    def refuse(*args, **kwargs):
        raise AssertionError("repeat_interleave on the fast path")

    monkeypatch.setattr(torch.Tensor, "repeat_interleave", refuse)
    splits = []
    split = torch.Tensor.split
    monkeypatch.setattr(torch.Tensor, "split", lambda t, *a, **k: splits.append(1) or split(t, *a, **k))
    s = SPANS[-1][1]
    q, k, v = (torch.randn(1, h, s, 8, requires_grad=True) for h in (4, 2, 2))
    out, _ = segment_attention_forward(_Attention(), q, k, v, None, lightning_dpo_spans=SPANS)
    out.sum().backward()
    assert len(splits) == 3  # query, key, value: once each
    assert q.grad is not None and k.grad.shape == k.shape


def test_without_spans_it_is_sdpa():
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 6, 8) for _ in range(3))
    out, _ = segment_attention_forward(_Attention(), q, k, v, None, is_causal=True)
    torch.testing.assert_close(out, sdpa_attention_forward(_Attention(), q, k, v, None, is_causal=True)[0])


def test_unsupported_attention_features_fail_loudly():
    q = torch.randn(1, 2, 3, 4)
    with pytest.raises(ValueError, match="softcap"):
        segment_attention_forward(_Attention(), q, q, q, None, lightning_dpo_spans=((0, 3, 0, 0),), softcap=5.0)


def test_switch_only_sdpa_models_and_keep_the_saved_config_clean(make_model, tmp_path):
    model = make_model("llama", attn_implementation="sdpa")
    assert enable_segment_attention(model) == "segments"
    assert model.config._attn_implementation == NAME == model.model.layers[0].self_attn.config._attn_implementation
    assert enable_segment_attention(model) == "segments"  # idempotent
    model.save_pretrained(tmp_path)
    assert NAME not in (tmp_path / "config.json").read_text()
    eager = make_model("llama", attn_implementation="eager")
    assert enable_segment_attention(eager) == "mask" and eager.config._attn_implementation == "eager"


def test_flash_models_use_transformers_varlen_path(make_model):
    model = make_model("llama")
    model.config._attn_implementation = "flash_attention_2"  # only the name is read here
    assert attention_kind(model) == "flash"
