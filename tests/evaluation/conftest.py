"""Toy models small enough to enumerate every completion."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

BOS, EOS = 0, 1
VOCAB = 4  # 0 BOS, 1 EOS (also pad), 2 and 3 ordinary tokens


def toy_llama(seed: int) -> LlamaForCausalLM:
    """A 1-layer Llama over a 4-token vocabulary with large random weights, so next-token distributions
    are far from uniform and two seeds give clearly different models."""
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=8,
        intermediate_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=16,
        initializer_range=1.0,
        tie_word_embeddings=False,
        bos_token_id=BOS,
        eos_token_id=EOS,
        pad_token_id=EOS,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


@pytest.fixture(scope="module")
def toy_pair() -> tuple[LlamaForCausalLM, LlamaForCausalLM]:
    """(policy, reference)."""
    return toy_llama(1), toy_llama(2)
