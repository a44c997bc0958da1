"""On-policy preference pairs: sample completions from a model, score them with a reward, pair them.

This is how the DPO paper builds its controlled-sentiment data (Sec. 6.1): completions are sampled from
the SFT model itself and a reward labels them, so the chosen side is just the better sample, not the best
possible answer. Two steps, kept apart so that each can move into the package on its own:

1. :func:`sample_scored` (needs a model): ``k`` temperature-1 samples per prompt through the package's
   generation core (:func:`lightning_dpo.evaluation.generation.generate_completions`: forked RNG, every
   logits processor off), decoded and scored by a ``(prompts, completions) -> rewards`` function.
2. :func:`best_vs_worst` (pure): per prompt, the best-scored finished sample against the worst; a prompt
   whose finished samples all score the same is skipped and counted as a tie.

Prompts are tokenised as the training data module tokenises them (the tokenizer's BOS in front, no
suffix), so a sample is drawn from exactly the distribution DPO later scores it under.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from torch import nn
from transformers import PreTrainedTokenizerBase

from lightning_dpo.data.tokenize import encode_batch, special_prefix
from lightning_dpo.evaluation.generation import SamplingSettings, generate_completions

RewardFn = Callable[[Sequence[str], Sequence[str]], Sequence[float]]

__all__ = ["PairSet", "ScoredSample", "best_vs_worst", "encode_prompts", "sample_scored"]


@dataclass(frozen=True)
class ScoredSample:
    """One sampled completion of a prompt."""

    text: str
    """Decoded completion, special tokens dropped."""
    score: float
    finished: bool
    """Whether it ended with EOS; an unfinished one was cut at ``max_new_tokens``."""
    num_tokens: int


@dataclass
class PairSet:
    """The pairs of :func:`best_vs_worst` and what was left out, by reason."""

    records: list[dict]
    """``{"prompt", "chosen", "rejected", "chosen_score", "rejected_score"}``, one per kept prompt."""
    ties: int
    """Prompts skipped because their best and worst finished samples score the same."""
    too_few_finished: int
    """Prompts skipped because fewer than two of their samples ended with EOS."""


def encode_prompts(tokenizer: PreTrainedTokenizerBase, prompts: Sequence[str]) -> list[list[int]]:
    """Prompt ids as ``lightning_dpo.data.tokenize`` builds them: the tokenizer's prefix (BOS) + the text."""
    prefix = special_prefix(tokenizer)
    return [ids if ids[: len(prefix)] == prefix else prefix + ids for ids in encode_batch(tokenizer, list(prompts))]


def sample_scored(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    reward_fn: RewardFn,
    *,
    k: int,
    settings: SamplingSettings | None = None,
    batch_size: int = 256,
) -> list[list[ScoredSample]]:
    """``k`` samples of each prompt, scored: ``out[i][j]`` is the j-th sample of ``prompts[i]``.

    The samples are a deterministic function of the model, the prompts, ``k`` and ``settings.seed``
    (one seed for the whole call; prompt i's samples are rows ``i·k .. i·k+k-1`` of one generation).
    ``settings`` defaults to true samples: temperature 1, no top-p / top-k, 48 new tokens at most.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    settings = settings or SamplingSettings()
    ids = [p for p in encode_prompts(tokenizer, prompts) for _ in range(k)]  # (P·k,) prompt-major
    completions = generate_completions(
        model, ids, settings, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
        batch_size=batch_size,
    )  # fmt: skip
    texts = tokenizer.batch_decode(completions, skip_special_tokens=True)
    repeated = [p for p in prompts for _ in range(k)]
    scores = [float(s) for s in reward_fn(repeated, texts)]
    if len(scores) != len(texts):
        raise ValueError(f"the reward function returned {len(scores)} values for {len(texts)} completions")
    flat = [
        ScoredSample(t, s, bool(c) and c[-1] == tokenizer.eos_token_id, len(c))
        for t, s, c in zip(texts, scores, completions)
    ]
    return [flat[i * k : (i + 1) * k] for i in range(len(prompts))]


def best_vs_worst(prompts: Sequence[str], samples: Sequence[Sequence[ScoredSample]]) -> PairSet:
    """One pair per prompt: its best-scored finished sample (chosen) against its worst (rejected).

    Unfinished samples are never paired: training appends EOS to every completion, which would teach the
    model that a cut-off text is a whole answer. Among equal scores the earliest sample wins, so the
    result is a pure function of its inputs.
    """
    if len(prompts) != len(samples):
        raise ValueError(f"{len(prompts)} prompts but {len(samples)} sample lists")
    records, ties, too_few = [], 0, 0
    for prompt, group in zip(prompts, samples):
        finished = [s for s in group if s.finished]
        if len(finished) < 2:
            too_few += 1
            continue
        best = max(finished, key=lambda s: s.score)  # max/min return the first of equals
        worst = min(finished, key=lambda s: s.score)
        if best.score == worst.score:
            ties += 1
            continue
        records.append(
            {"prompt": prompt, "chosen": best.text, "rejected": worst.text,
             "chosen_score": best.score, "rejected_score": worst.score}
        )  # fmt: skip
    return PairSet(records, ties, too_few)
