"""Mixture-of-experts policies: the router's load-balancing loss from per-sequence sums equals transformers'
own, on every layout (padded, packed, prompt shared), with its gradient; and DPOModule adds and logs it."""

from __future__ import annotations

import importlib

import pytest
import torch
import transformers

from lightning_dpo import DPOModule
from lightning_dpo.logps import LogpsOptions, completion_logps
from lightning_dpo.ops.moe import RouterSums, load_balancing_loss, moe_routing, sequence_router_sums
from lightning_dpo.ops.packing import padded_token_owners

MOE = {
    "mixtral": ("MixtralConfig", "MixtralForCausalLM", {"num_local_experts": 4}),
    "qwen2_moe": ("Qwen2MoeConfig", "Qwen2MoeForCausalLM", {"num_experts": 4, "moe_intermediate_size": 16,
                                                              "shared_expert_intermediate_size": 32}),
}  # fmt: skip
COMMON = dict(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, num_experts_per_tok=2, max_position_embeddings=128, pad_token_id=0,
              router_aux_loss_coef=0.05)  # fmt: skip
LAYOUTS = {
    "padded": LogpsOptions(padding_free=False, share_prompt=False),
    "packed": LogpsOptions(padding_free=True, share_prompt=False),
    "shared": LogpsOptions(padding_free=True, share_prompt=True),
    "full logits": LogpsOptions(fused_head=False),
}


def make_moe(name, seed=0):
    config_cls, model_cls, extra = MOE[name]
    torch.manual_seed(seed)
    return getattr(transformers, model_cls)(getattr(transformers, config_cls)(**COMMON, **extra)).train()


def transformers_aux(model, batch):
    """The model's own aux_loss over the padded batch (what transformers adds to its loss)."""
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_router_logits=True)
    return out.aux_loss


@pytest.mark.parametrize("name", list(MOE))
def test_routing_is_read_from_the_model(name, make_model):
    assert moe_routing(make_moe(name)) == (4, 2)
    assert moe_routing(make_model("llama")) is None  # dense


@pytest.mark.parametrize("name", list(MOE))
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_aux_loss_equals_transformers_on_every_layout(name, layout, batch):
    model = make_moe(name)
    expected = transformers_aux(model, batch)
    (expected_grad,) = torch.autograd.grad(expected, [model.model.layers[0].mlp.gate.weight])
    out = completion_logps(model, batch, options=LAYOUTS[layout], router=(4, 2))
    if layout in ("packed", "shared"):  # the layout really ran packed, and shared the prompts
        assert out.computed_tokens is not None
        shared = out.computed_tokens.sum() < batch["attention_mask"].sum()
        assert bool(shared) == (layout == "shared")
    aux = load_balancing_loss(RouterSums(out.router_assignments, out.router_probabilities, out.router_rows), 4)
    torch.testing.assert_close(aux, expected, rtol=1e-5, atol=1e-6)
    (grad,) = torch.autograd.grad(aux, [model.model.layers[0].mlp.gate.weight])
    torch.testing.assert_close(grad, expected_grad, rtol=1e-4, atol=1e-6)


def test_sums_by_hand():
    """One layer, 2 experts, top-1; tokens 0 and 1 of sequence 0, token 2 is padding."""
    logits = (torch.tensor([[2.0, 0.0], [0.0, 2.0], [5.0, 0.0]]),)
    sums = sequence_router_sums(logits, 2, 1, torch.tensor([0, 1]), torch.tensor([0, 0]), n=1)
    assert sums.assignments.tolist() == [[1.0, 1.0]] and sums.rows.tolist() == [2.0]
    p = torch.softmax(logits[0][:2], -1).sum(0)
    torch.testing.assert_close(load_balancing_loss(sums, 2), 2 * (0.5 * p / 2).sum())


def test_the_module_adds_and_logs_the_router_loss(tmp_path, batch):
    model = make_moe("mixtral")
    model.save_pretrained(tmp_path / "moe")
    tokenizer_dir = importlib.import_module("lightning_dpo.embedded").resolve_model("embedded:tiny-polite-sft")
    transformers.AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(tmp_path / "moe")
    module = DPOModule(model_name_or_path=str(tmp_path / "moe"), logps={"padding_free": True, "share_prompt": True})
    module.configure_model()
    loss, stats = module.dpo_step(batch)
    expected = transformers_aux(module.policy, batch).detach()
    torch.testing.assert_close(stats["aux_loss"].values, expected.expand(3), rtol=1e-5, atol=1e-6)
    # The policy equals the reference: every DPO loss is ln 2, plus the config's coefficient × the router loss.
    torch.testing.assert_close(loss.detach(), torch.log(torch.tensor(2.0)) + 0.05 * expected, rtol=1e-5, atol=1e-6)
    off = DPOModule(model_name_or_path=str(tmp_path / "moe"), loss={"router_aux_loss_coef": 0.0})
    off.configure_model()
    assert "aux_loss" not in off.dpo_step(batch)[1]


def test_a_coefficient_for_a_dense_model_is_refused(tiny_model_dir):
    module = DPOModule(model_name_or_path=str(tiny_model_dir), loss={"router_aux_loss_coef": 0.01})
    with pytest.raises(ValueError, match="not a mixture-of-experts model"):
        module.configure_model()


def test_padded_owners_skip_padding():
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    tokens, owners = padded_token_owners(mask)
    assert tokens.tolist() == [0, 1, 3] and owners.tolist() == [0, 0, 1]
