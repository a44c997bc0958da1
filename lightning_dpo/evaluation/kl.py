"""Sequence log-probs of sampled completions, and the Monte-Carlo estimate of KL(πθ ‖ πref).

The sequence-level KL of the policy from the reference, for one prompt x, is

    KL(πθ(·|x) ‖ πref(·|x)) = E_{y ~ πθ(·|x)} [ log πθ(y|x) − log πref(y|x) ],

so with completions y_i sampled from πθ (temperature 1, no truncation) the mean of the per-sample log
ratios is an unbiased estimate, averaged over prompts as well. A single log ratio may be negative; the
mean converges to a value ≥ 0. Completions cut at ``max_new_tokens`` estimate the KL of the distribution of
the first ``max_new_tokens`` tokens, which is what the samples are drawn from.

Log-probs are the training's own (:func:`lightning_dpo.logps.completion_logps`): a sum over completion
tokens, EOS included, in fp32.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lightning_dpo.logps import completion_logps


@dataclass(frozen=True)
class Estimate:
    """A sample mean with its standard error (``sem`` = sample std / √n)."""

    mean: float
    sem: float
    n: int


def mean_and_sem(values: Sequence[float] | Tensor) -> Estimate:
    """Mean and standard error of the mean of a 1-D sample."""
    v = torch.as_tensor(values, dtype=torch.float64).flatten()
    n = v.numel()
    if n == 0:
        return Estimate(float("nan"), float("nan"), 0)
    sem = (v.std(unbiased=True) / math.sqrt(n)).item() if n > 1 else float("nan")
    return Estimate(v.mean().item(), sem, n)


def kl_estimate(policy_logps: Tensor, reference_logps: Tensor) -> Estimate:
    """Monte-Carlo KL(πθ ‖ πref) from completions sampled from πθ.

    Args:
        policy_logps: (N,) log πθ(y_i | x_i) of the samples.
        reference_logps: (N,) log πref(y_i | x_i) of the same samples.
    """
    if policy_logps.shape != reference_logps.shape:
        raise ValueError(f"log-prob shapes differ: {tuple(policy_logps.shape)} vs {tuple(reference_logps.shape)}")
    return mean_and_sem(policy_logps.double() - reference_logps.double())


def completion_batch(
    prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]], pad_token_id: int
) -> dict[str, Tensor]:
    """Right-padded prompt + completion rows in the collator's layout: ``input_ids``, ``attention_mask``
    and ``completion_mask``, each (N, T); masks from lengths, never from token ids (pad may equal EOS)."""
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    width = max(len(p) + len(c) for p, c in zip(prompts, completions))
    input_ids = torch.full((len(prompts), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    completion_mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, (p, c) in enumerate(zip(prompts, completions)):
        if not len(p):
            raise ValueError("a prompt has no tokens: the first completion token needs a prefix to be scored")
        n = len(p) + len(c)
        input_ids[row, :n] = torch.as_tensor([*p, *c], dtype=torch.long)
        attention_mask[row, :n] = 1
        completion_mask[row, len(p) : n] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "completion_mask": completion_mask}


@torch.no_grad()
def sequence_logprobs(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    completions: Sequence[Sequence[int]],
    *,
    pad_token_id: int,
    batch_size: int = 32,
) -> Tensor:
    """log π(completion | prompt) for each pair, (N,) float32 on the CPU, with ``model`` in eval mode."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        out = []
        for start in range(0, len(prompts), batch_size):
            batch = completion_batch(
                prompts[start : start + batch_size], completions[start : start + batch_size], pad_token_id
            )
            out.append(completion_logps(model, {k: v.to(device) for k, v in batch.items()}).logps.float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0)
