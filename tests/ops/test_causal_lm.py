"""Splitting causal LMs into decoder + plain head, and refusing (or catching) the ones that are not."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lightning_dpo.ops.causal_lm import CausalLMParts, head_logits, split_causal_lm, verify_split


def test_split_reproduces_the_models_logits(arch, make_model, batch):
    model = make_model(arch).eval()
    parts = split_causal_lm(model)
    assert isinstance(parts, CausalLMParts), parts
    with torch.no_grad():
        expected = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        hidden = parts.body(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        torch.testing.assert_close(head_logits(parts, hidden), expected, rtol=1e-5, atol=1e-5)
    assert verify_split(model, parts, batch["input_ids"], batch["attention_mask"])


def test_transforms_are_read_from_the_config(make_model):
    assert split_causal_lm(make_model("gemma2")).softcap == 3.0
    assert split_causal_lm(make_model("cohere")).logit_scale == 0.5
    assert split_causal_lm(make_model("granite")).logit_scale == 0.25
    tied = split_causal_lm(make_model("llama-tied"))
    assert tied.head.weight is tied.body.embed_tokens.weight


def test_an_unknown_logit_transform_is_caught_by_verification(make_model, batch):
    class Doubled(type(make_model("llama"))):
        def forward(self, *args, **kwargs):
            out = super().forward(*args, **kwargs)
            out.logits = 2 * out.logits
            return out

    model = Doubled(make_model("llama").config)
    model.train()
    parts = split_causal_lm(model)
    assert isinstance(parts, CausalLMParts)  # structurally plain...
    assert not verify_split(model, parts, batch["input_ids"], batch["attention_mask"])  # ...but not in fact
    assert model.training and all(m.training for m in model.modules())  # modes restored


def test_refusals(make_model):
    model = make_model("llama")
    model.lm_head = nn.Sequential(model.lm_head)
    assert "not a plain nn.Linear" in split_causal_lm(model)
    assert "not a Hugging Face" in split_causal_lm(nn.Linear(2, 2))
    compiled = make_model("llama")
    compiled.compile()
    assert "compiled" in split_causal_lm(compiled)
    multiplied = make_model("llama")
    multiplied.config.lm_head_multiplier = 2.0
    assert "multiplier" in split_causal_lm(multiplied)


def test_peft_lora_on_the_body_splits_and_on_the_head_does_not(make_model):
    peft = pytest.importorskip("peft")
    body_lora = peft.get_peft_model(make_model("llama"), peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    parts = split_causal_lm(body_lora)
    assert isinstance(parts, CausalLMParts)
    assert any("lora_A" in n for n, _ in parts.body.named_parameters())  # the adapter is inside the body
    head_lora = peft.get_peft_model(make_model("llama"), peft.LoraConfig(r=2, target_modules=["q_proj", "lm_head"]))
    assert "peft.tuners.lora" in split_causal_lm(head_lora)  # -> full logits, where the head's LoRA trains
    saved_head = peft.get_peft_model(
        make_model("llama"), peft.LoraConfig(r=2, target_modules=["q_proj"], modules_to_save=["lm_head"])
    )
    assert "ModulesToSaveWrapper" in split_causal_lm(saved_head)
