"""The KL(πθ ‖ πref) estimate: exact by enumeration on a toy model, Monte-Carlo from generate, and on the tiny Llama."""

from __future__ import annotations

import itertools
import math
from collections import Counter

import pytest
import torch

from lightning_dpo.evaluation.generation import SamplingSettings, generate_completions
from lightning_dpo.evaluation.kl import completion_batch, kl_estimate, mean_and_sem, sequence_logprobs

from .conftest import BOS, EOS, VOCAB

PROMPT = [BOS, 2]
MAX_NEW = 2


def all_completions() -> list[list[int]]:
    """Every completion of at most MAX_NEW tokens that stops at its first EOS: [EOS], and [t, u] for t != EOS."""
    return [[EOS]] + [[t, u] for t, u in itertools.product(range(VOCAB), repeat=2) if t != EOS]


def manual_logprob(model, prompt: list[int], completion: list[int]) -> float:
    """Σ_t log softmax(model(prefix))[token], one unpadded forward per token."""
    total = 0.0
    for i, token in enumerate(completion):
        ids = torch.tensor([prompt + completion[:i]])
        total += model(ids).logits[0, -1].log_softmax(-1)[token].item()
    return total


def test_completion_batch_masks_come_from_lengths():
    batch = completion_batch([[0, 5], [0]], [[EOS], [7, EOS]], pad_token_id=EOS)
    assert batch["input_ids"].tolist() == [[0, 5, EOS], [0, 7, EOS]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 1]]
    assert batch["completion_mask"].tolist() == [[0, 0, 1], [0, 1, 1]]
    batch = completion_batch([[0, 5, 6]], [[EOS]], pad_token_id=EOS)
    assert batch["completion_mask"].tolist() == [[0, 0, 0, 1]]


@torch.no_grad()
def test_sequence_logprobs_match_token_by_token(toy_pair):
    policy, _ = toy_pair
    completions = all_completions()
    batched = sequence_logprobs(policy, [PROMPT] * len(completions), completions, pad_token_id=EOS, batch_size=5)
    manual = torch.tensor([manual_logprob(policy, PROMPT, c) for c in completions])
    torch.testing.assert_close(batched, manual, atol=1e-5, rtol=0)


@torch.no_grad()
def test_exact_kl_by_enumeration_matches_the_monte_carlo_estimate(toy_pair):
    policy, reference = toy_pair
    # Settings the model ships with must not leak into "true samples": a polluted generation_config
    # would change the distribution (and the estimate) beyond recognition.
    policy.generation_config.update(top_k=1, top_p=0.3, temperature=0.2, repetition_penalty=3.0)
    completions = all_completions()
    prompts = [PROMPT] * len(completions)
    lp = sequence_logprobs(policy, prompts, completions, pad_token_id=EOS).double()
    lq = sequence_logprobs(reference, prompts, completions, pad_token_id=EOS).double()
    p = lp.exp()
    assert p.sum().item() == pytest.approx(1.0, abs=1e-5)  # the enumeration covers every outcome once
    assert lq.exp().sum().item() == pytest.approx(1.0, abs=1e-5)
    exact = (p * (lp - lq)).sum().item()
    assert exact > 0.1  # the two toy models differ

    n = 4000
    samples = generate_completions(
        policy,
        [PROMPT] * n,
        SamplingSettings(max_new_tokens=MAX_NEW, seed=0),
        eos_token_id=EOS,
        pad_token_id=EOS,
        batch_size=n,
    )
    # Samples follow πθ: empirical frequencies match the enumerated probabilities.
    counts = Counter(tuple(s) for s in samples)
    assert set(counts) <= {tuple(c) for c in completions}
    for c, prob in zip(completions, p.tolist()):
        assert counts[tuple(c)] / n == pytest.approx(prob, abs=4 * math.sqrt(prob * (1 - prob) / n) + 1e-3)

    estimate = kl_estimate(
        sequence_logprobs(policy, [PROMPT] * n, samples, pad_token_id=EOS, batch_size=1000),
        sequence_logprobs(reference, [PROMPT] * n, samples, pad_token_id=EOS, batch_size=1000),
    )
    assert estimate.n == n
    assert abs(estimate.mean - exact) < 4 * estimate.sem, (estimate, exact)


def test_kl_estimate_and_sem_by_hand():
    est = kl_estimate(torch.tensor([-1.0, -2.0, -3.0]), torch.tensor([-2.0, -2.0, -2.0]))
    assert est.mean == pytest.approx(0.0) and est.n == 3
    assert est.sem == pytest.approx(1.0 / math.sqrt(3))
    assert math.isnan(mean_and_sem([1.0]).sem)
    with pytest.raises(ValueError, match="shapes differ"):
        kl_estimate(torch.zeros(2), torch.zeros(3))


def test_kl_of_a_model_from_itself_is_exactly_zero(tiny_model_dir):
    from lightning_dpo.models import load_causal_lm, load_tokenizer

    model, tokenizer = load_causal_lm(str(tiny_model_dir)), load_tokenizer(str(tiny_model_dir))
    copy = load_causal_lm(str(tiny_model_dir))
    prompts = [tokenizer("\n\nHuman: What is 2 plus 2?\n\nAssistant:")["input_ids"]] * 6
    samples = generate_completions(
        model,
        prompts,
        SamplingSettings(max_new_tokens=6),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    assert all(1 <= len(s) <= 6 for s in samples)
    kwargs = dict(pad_token_id=tokenizer.pad_token_id)
    est = kl_estimate(
        sequence_logprobs(model, prompts, samples, **kwargs), sequence_logprobs(copy, prompts, samples, **kwargs)
    )
    assert est.mean == 0.0
