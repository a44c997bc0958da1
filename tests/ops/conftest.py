"""Tiny in-memory causal LMs of several architectures, and a small concatenated batch."""

from __future__ import annotations

import pytest
import torch
import transformers

from lightning_dpo.data.collate import PreferenceCollator

VOCAB = 97
COMMON = dict(
    vocab_size=VOCAB,
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=128,
    pad_token_id=0,
)

ARCHITECTURES = {
    "llama": ("LlamaConfig", "LlamaForCausalLM", {}),
    "llama-tied": ("LlamaConfig", "LlamaForCausalLM", {"tie_word_embeddings": True}),
    # final logit soft-capping; attention soft-capping off so that sdpa is allowed
    "gemma2": (
        "Gemma2Config",
        "Gemma2ForCausalLM",
        {"final_logit_softcapping": 3.0, "attn_logit_softcapping": None, "head_dim": 8, "query_pre_attn_scalar": 8},
    ),
    "cohere": ("CohereConfig", "CohereForCausalLM", {"logit_scale": 0.5}),  # logits × logit_scale
    "granite": ("GraniteConfig", "GraniteForCausalLM", {"logits_scaling": 4.0}),  # logits / logits_scaling
    "qwen2": ("Qwen2Config", "Qwen2ForCausalLM", {}),  # biased q/k/v projections
}


def make_model(name: str, dtype: torch.dtype = torch.float32, seed: int = 0, **overrides) -> torch.nn.Module:
    config_cls, model_cls, extra = ARCHITECTURES[name]
    config = getattr(transformers, config_cls)(**{**COMMON, **extra, **overrides})
    torch.manual_seed(seed)
    model = getattr(transformers, model_cls)(config).to(dtype)
    return model.train()


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread, and do not stall when other jobs share the cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """A test that takes ``arch`` runs once per architecture."""
    if "arch" in metafunc.fixturenames:
        metafunc.parametrize("arch", list(ARCHITECTURES))


@pytest.fixture(name="make_model")
def _make_model_fixture():
    return make_model


PAIRS = [
    # different prompt lengths, completions longer and shorter than their partner, padding equal to EOS
    {"prompt_input_ids": [1, 5, 6, 7, 8], "chosen_input_ids": [9, 10, 2], "rejected_input_ids": [11, 2]},
    {"prompt_input_ids": [1, 5], "chosen_input_ids": [3, 2], "rejected_input_ids": [4, 4, 12, 13, 14, 2]},
    {"prompt_input_ids": [1, 20, 21], "chosen_input_ids": [22, 23, 24, 2], "rejected_input_ids": [25, 26, 2]},
]


@pytest.fixture
def batch() -> dict[str, torch.Tensor]:
    return PreferenceCollator(pad_token_id=2)(PAIRS)
