"""Generation on the tiny model: padding, EOS handling, seeds, untouched RNG streams."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from lightning_dpo.evaluation.generation import (
    SamplingSettings,
    cut_at_eos,
    generate_completions,
    left_pad,
)
from lightning_dpo.models import load_causal_lm, load_tokenizer

PROMPTS = [
    "\n\nHuman: What is 2 plus 2?\n\nAssistant:",
    "\n\nHuman: Can you tell me what the capital of France is, please?\n\nAssistant:",
]


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return load_causal_lm(str(tiny_model_dir)), load_tokenizer(str(tiny_model_dir))


def _ids(tokenizer):
    return [tokenizer(p)["input_ids"] for p in PROMPTS]


def test_left_pad_and_cut_at_eos():
    input_ids, mask = left_pad([[5, 6, 7], [8]], pad_token_id=0)
    assert input_ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    new = torch.tensor([[4, 1, 1, 1], [4, 5, 6, 7], [1, 9, 9, 9]])
    assert cut_at_eos(new, eos_token_id=1) == [[4, 1], [4, 5, 6, 7], [1]]
    assert cut_at_eos(new, eos_token_id=[1, 6]) == [[4, 1], [4, 5, 6], [1]]


def test_batched_left_padded_generation_equals_one_prompt_at_a_time(tiny):
    model, tokenizer = tiny
    greedy = SamplingSettings(max_new_tokens=8, do_sample=False)
    kw = dict(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    batched = generate_completions(model, _ids(tokenizer), greedy, **kw)
    single = [generate_completions(model, [ids], greedy, **kw)[0] for ids in _ids(tokenizer)]
    assert batched == single
    assert all(1 <= len(c) <= 8 for c in batched)
    assert all(tokenizer.eos_token_id not in c[:-1] for c in batched)  # nothing after the first EOS


def test_sampling_is_seeded_and_leaves_every_rng_stream_untouched(tiny):
    model, tokenizer = tiny
    kw = dict(eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    settings = SamplingSettings(max_new_tokens=8, seed=7)
    torch.manual_seed(123), random.seed(123), np.random.seed(123)
    before = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
    first = generate_completions(model, _ids(tokenizer) * 2, settings, **kw)
    assert torch.equal(torch.get_rng_state(), before[0])
    assert random.getstate() == before[1]
    assert np.array_equal(np.random.get_state()[1], before[2])
    assert generate_completions(model, _ids(tokenizer) * 2, settings, **kw) == first
    assert generate_completions(model, _ids(tokenizer) * 2, settings, seed=8, **kw) != first


def test_generation_restores_the_training_mode(tiny):
    model, tokenizer = tiny
    model.train()
    generate_completions(model, _ids(tokenizer), SamplingSettings(max_new_tokens=2), eos_token_id=1, pad_token_id=2)
    assert model.training
    model.eval()


def test_settings_are_checked():
    with pytest.raises(ValueError, match="temperature"):
        SamplingSettings(temperature=0)
    with pytest.raises(ValueError, match="top_p"):
        SamplingSettings(top_p=0)
    assert SamplingSettings().exact and not SamplingSettings(top_p=0.9).exact
