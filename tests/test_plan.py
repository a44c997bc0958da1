"""lightning_dpo.plan: parameter counts against real Hugging Face models, FLOPs by hand, memory by cause."""

from __future__ import annotations

import pytest
import torch
import transformers

from lightning_dpo.plan import MemorySettings, ModelDims, causal_pairs, lora_params, peak_memory, step_flops

SMALL = dict(vocab_size=300, hidden_size=64, intermediate_size=160, num_hidden_layers=3, num_attention_heads=4)
CONFIGS = {
    "llama": ("LlamaConfig", {**SMALL, "num_key_value_heads": 2, "tie_word_embeddings": False}),
    "llama-bias": ("LlamaConfig", {**SMALL, "attention_bias": True, "mlp_bias": True}),
    "qwen2": ("Qwen2Config", {**SMALL, "num_key_value_heads": 2, "tie_word_embeddings": True}),
    "qwen3": ("Qwen3Config", {**SMALL, "num_key_value_heads": 2, "head_dim": 32}),
    "gemma2": ("Gemma2Config", {**SMALL, "num_key_value_heads": 2, "head_dim": 16}),
    "mixtral": ("MixtralConfig", {**SMALL, "num_key_value_heads": 2, "num_local_experts": 4, "num_experts_per_tok": 2}),
    "qwen2_moe": (
        "Qwen2MoeConfig",
        {
            **SMALL,
            "num_experts": 4,
            "num_experts_per_tok": 2,
            "moe_intermediate_size": 48,
            "shared_expert_intermediate_size": 96,
        },
    ),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_parameter_count_is_the_models(name):
    config_cls, kwargs = CONFIGS[name]
    config = getattr(transformers, config_cls)(**kwargs)
    with torch.device("meta"):
        model = transformers.AutoModelForCausalLM.from_config(config)
    assert ModelDims.from_config(config.to_dict()).params == sum(p.numel() for p in model.parameters())


QWEN = {
    "num_hidden_layers": 24,
    "hidden_size": 896,
    "intermediate_size": 4864,
    "num_attention_heads": 14,
    "num_key_value_heads": 2,
    "vocab_size": 151936,
    "tie_word_embeddings": True,
    "model_type": "qwen2",
}


def test_qwen25_05b():
    assert ModelDims.from_config(QWEN).params == 494_032_768


def test_a_config_without_decoder_fields_is_refused_by_name():
    with pytest.raises(ValueError, match=r"model_type 'gpt2' has no \['num_hidden_layers'"):
        ModelDims.from_config({"model_type": "gpt2", "n_layer": 2})


def test_step_flops_by_hand():
    dims = ModelDims(layers=2, hidden=16, intermediate=32, heads=2, kv_heads=1, head_dim=8, vocab=100, tied=True)
    flops = step_flops(dims, [(10, 4, 6)])
    assert flops.tokens == 20 and flops.scored == 10  # the prompt once; the head at completion tokens only
    per_token = 2 * 2 * (16 * (16 + 2 * 8) + 16 * 16 + 3 * 16 * 32)  # 2 FLOPs x layers x weights touched
    assert flops.parts["layers"] == per_token * 20
    # queries see: the prompt + chosen causally (14 tokens), the rejected tokens the prompt and themselves
    assert causal_pairs(6, 10) == 6 * 10 + 21
    assert flops.parts["attention"] == 4 * 2 * 16 * (causal_pairs(14) + causal_pairs(6, 10))
    assert flops.parts["head"] == 2 * 16 * 100 * 10
    forward = sum(flops.parts.values())
    assert flops.policy == 3 * forward and flops.model == 4 * forward
    assert flops.hardware == flops.model + flops.parts["head"]  # the fused head recomputes its logits
    lora = step_flops(dims, [(10, 4, 6)], trainable_base=False, reference=False)
    assert lora.policy == 2 * forward and lora.model == lora.policy  # no weight gradients, no reference pass


def test_lora_params_match_peft():
    peft = pytest.importorskip("peft")
    config = transformers.LlamaConfig(**{**SMALL, "num_key_value_heads": 2})
    model = transformers.AutoModelForCausalLM.from_config(config)
    adapted = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules="all-linear"))
    trainable = sum(p.numel() for p in adapted.parameters() if p.requires_grad)
    assert lora_params(ModelDims.from_config(config.to_dict()), 4) == trainable


QWEN_DIMS = ModelDims.from_config(QWEN)
BASE = MemorySettings(tokens=700, scored=430, optimizer="adamw", optimizer_impl="for-loop")


def test_memory_static_parts_by_setting():
    g = QWEN_DIMS.params * 4
    plan = peak_memory(QWEN_DIMS, BASE)
    assert plan.parts["weights"] == plan.parts["reference"] == g
    assert plan.parts["optimizer_state"] == 2 * g
    assert peak_memory(QWEN_DIMS, MemorySettings(**{**BASE.__dict__, "reference_dtype": "bfloat16"})).parts[
        "reference"
    ] == pytest.approx(g / 2)
    assert (
        "reference" not in peak_memory(QWEN_DIMS, MemorySettings(**{**BASE.__dict__, "reference": "precomputed"})).parts
    )
    sharded = peak_memory(QWEN_DIMS, MemorySettings(**{**BASE.__dict__, "strategy": "fsdp", "devices": 8}))
    assert sharded.parts["weights"] == g / 8 and sharded.parts["optimizer_state"] == 2 * g / 8
    assert sharded.parts["gathered"] > 0  # the root unit and two layers, unsharded while they run


def test_memory_options_cut_what_they_should():
    base = peak_memory(QWEN_DIMS, BASE)
    in_backward = peak_memory(QWEN_DIMS, MemorySettings(**{**BASE.__dict__, "optimizer_in_backward": True}))
    assert in_backward.total < base.total
    checkpointed = peak_memory(QWEN_DIMS, MemorySettings(**{**BASE.__dict__, "checkpointing": True}))
    assert checkpointed.total < base.total
    lora = peak_memory(QWEN_DIMS, MemorySettings(**{**BASE.__dict__, "lora_params": 4_000_000, "reference": "adapter"}))
    assert lora.total < base.total / 2
    assert base.moment in ("forward end", "backward start", "backward end", "optimizer step")


def test_memory_settings_are_checked():
    with pytest.raises(ValueError, match="precision"):
        MemorySettings(precision="fp8")
    with pytest.raises(ValueError, match="strategy"):
        MemorySettings(strategy="zero9")
