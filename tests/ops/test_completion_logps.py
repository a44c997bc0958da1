"""The fast path of ``completion_logps`` against the reference (full-logits) path: values and gradients in
fp32 to 1e-5, for every layout (padded, packed, shared prompt), loss extra (LD-DPO, WPO) and architecture."""

from __future__ import annotations

import pytest
import torch

from lightning_dpo.logps import LogpsOptions, completion_logps

REFERENCE = LogpsOptions(fused_head=False)
LAYOUTS = {
    "padded": LogpsOptions(padding_free=False, share_prompt=False, chunk_size=4),
    "packed": LogpsOptions(padding_free=True, share_prompt=False, chunk_size=4),
    "shared": LogpsOptions(padding_free=True, share_prompt=True),
}
TOL = {"rtol": 1e-5, "atol": 1e-5}


def run(model, batch, options, **kwargs):
    """SequenceLogps and the gradients of a weighted sum of the log-probs (a different weight per row)."""
    model.zero_grad(set_to_none=True)
    out = completion_logps(model, batch, options=options, **kwargs)
    weights = torch.linspace(-1.0, 2.0, out.logps.shape[0])
    (out.logps * weights).sum().backward()
    return out, {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_same(reference, fast):
    (ref_out, ref_grads), (out, grads) = reference, fast
    for name in ("logps", "num_tokens", "logits_sum", "raw_logps", "wpo_log_weights", "entropy_sum", "top1_count"):
        a, b = getattr(ref_out, name), getattr(out, name)
        assert (a is None) == (b is None), name
        if a is not None:
            torch.testing.assert_close(b, a, **TOL, msg=name)
    assert grads.keys() == ref_grads.keys()
    for name, grad in ref_grads.items():
        scale = max(1.0, float(grad.abs().max()))  # fp32 sums in another order: relative to the largest entry
        torch.testing.assert_close(grads[name], grad, rtol=1e-5, atol=1e-5 * scale, msg=name)


SEQUENCE_PACKED = {"gemma2"}
"""Architectures that run eager attention here (Gemma 2): packed sequence by sequence through transformers'
block mask, without a shared prompt; every other one runs our span attention and shares the prompt."""


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_every_architecture_matches_full_logits(arch, layout, make_model, batch):
    model = make_model(arch)  # sdpa, except Gemma 2 (eager: packed through transformers' block mask)
    fast = run(model, batch, LAYOUTS[layout])
    assert_same(run(model, batch, REFERENCE), fast)
    # The layout really ran: a silent fall-back to padded rows (computed_tokens None) must fail here.
    computed, per_row = fast[0].computed_tokens, batch["attention_mask"].sum(-1)
    if layout == "padded":
        assert computed is None
    elif layout == "packed" or arch in SEQUENCE_PACKED:
        assert computed is not None and computed.tolist() == per_row.tolist()
    else:  # shared: each rejected row's prompt is computed once, with its chosen row
        pairs = len(per_row) // 2
        prompts = batch["completion_mask"].argmax(-1)[pairs:]  # (B,) prompt lengths
        assert computed is not None
        assert computed.tolist() == [*per_row[:pairs].tolist(), *(per_row[pairs:] - prompts).tolist()]


@pytest.mark.parametrize("layout", list(LAYOUTS))
@pytest.mark.parametrize(
    "extra",
    [{"ld_alpha": 0.3}, {"with_wpo": True}, {"ld_alpha": 0.0, "with_wpo": True}, {"with_stats": True}],
    ids=str,
)
def test_ld_dpo_and_wpo_match_full_logits(layout, extra, make_model, batch):
    model = make_model("llama")
    assert_same(run(model, batch, REFERENCE, **extra), run(model, batch, LAYOUTS[layout], **extra))


def test_packing_reports_the_tokens_it_computed(make_model, batch):
    model = make_model("llama")
    assert run(model, batch, LAYOUTS["padded"])[0].computed_tokens is None
    packed = run(model, batch, LAYOUTS["packed"])[0].computed_tokens
    shared = run(model, batch, LAYOUTS["shared"])[0].computed_tokens
    assert packed.tolist() == batch["attention_mask"].sum(-1).tolist()
    assert shared.sum() == packed.sum() - (5 + 2 + 3)  # each rejected row's prompt, once less


def test_default_options_pack_and_share_on_cpu_with_sdpa(make_model, batch):
    model = make_model("llama", attn_implementation="sdpa")
    out = run(model, batch, LogpsOptions())
    assert out[0].computed_tokens is not None and out[0].computed_tokens.sum() < batch["attention_mask"].sum()
    assert_same(run(model, batch, REFERENCE), out)
    eager = make_model("llama", attn_implementation="eager")
    assert run(eager, batch, LogpsOptions())[0].computed_tokens is None  # a dense mask would not pay: padded


def test_eager_attention_packs_through_transformers_block_mask(make_model, batch):
    """Asked explicitly, a model without span attention packs sequence by sequence (no shared prompt)."""
    model = make_model("llama", attn_implementation="eager")
    fast = run(model, batch, LogpsOptions(padding_free=True, share_prompt=True))
    assert fast[0].computed_tokens.tolist() == batch["attention_mask"].sum(-1).tolist()
    assert_same(run(model, batch, REFERENCE), fast)


def test_gradient_checkpointing_replays_the_packed_attention(make_model, batch):
    from lightning_dpo.models import enable_gradient_checkpointing

    model = make_model("llama")
    enable_gradient_checkpointing(model)
    assert_same(run(model, batch, REFERENCE), run(model, batch, LAYOUTS["shared"]))


def test_bf16_model_stays_close(make_model, batch):
    model = make_model("llama", dtype=torch.bfloat16)
    ref, fast = run(model, batch, REFERENCE)[0], run(model, batch, LAYOUTS["shared"])[0]
    assert fast.logps.dtype == torch.float32
    torch.testing.assert_close(fast.logps, ref.logps, rtol=2e-2, atol=0.1)


def test_lora_policy_and_its_disabled_adapter(make_model, batch):
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(make_model("llama"), peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():  # a trained adapter, so that enabled and disabled differ
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_()
    for layout in LAYOUTS.values():
        ref, fast = run(model, batch, REFERENCE), run(model, batch, layout)
        assert ref[1].keys() == fast[1].keys() and all("lora_" in n for n in fast[1])  # only the adapter trains
        assert_same(ref, fast)
        with model.disable_adapter(), torch.no_grad():
            base_ref = completion_logps(model, batch, options=REFERENCE).logps
            base_fast = completion_logps(model, batch, options=layout).logps
        torch.testing.assert_close(base_fast, base_ref, **TOL)
        assert not torch.allclose(base_fast, fast[0].logps.detach())


def test_lora_on_the_head_falls_back_to_full_logits(make_model, batch):
    peft = pytest.importorskip("peft")
    model = peft.get_peft_model(make_model("llama"), peft.LoraConfig(r=2, target_modules=["q_proj", "lm_head"]))
    fast = run(model, batch, LAYOUTS["shared"])
    assert fast[0].computed_tokens is None
    assert any("lm_head.lora_" in n for n in fast[1])  # the head's adapter trains
    assert_same(run(model, batch, REFERENCE), fast)
