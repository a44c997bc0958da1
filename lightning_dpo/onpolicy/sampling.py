"""K samples of each prompt from a model, decoded and scored: the core of ``generate``, iterative and online DPO.

Sampling goes through :func:`lightning_dpo.evaluation.generation.generate_completions`: a forked RNG
seeded per call (the caller's random streams continue unchanged), every logits processor off except the
ones ``SamplingSettings`` names, left padding, eval mode (no dropout), ``synced_gpus`` where parameters
are sharded. Prompt ``i``'s samples are rows ``i·K .. i·K + K − 1`` of one generation, so the samples are
a function of the model, the batch of prompts, K, the settings and the seed.

A sample is *finished* when it ended with EOS; one cut at ``max_new_tokens`` is not. A prompt whose
tokens leave no room for ``max_new_tokens`` within the model's context is an error naming the prompt.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from torch import nn
from transformers import PreTrainedTokenizerBase

from lightning_dpo.data.prompts import Prompt, build_prompts
from lightning_dpo.evaluation.generation import SamplingSettings, generate_completions, preserved_rng
from lightning_dpo.evaluation.rewards import RewardFn
from lightning_dpo.onpolicy.scoring import Scorer, ScoringSettings


@dataclass
class SampleGroup:
    """The K samples of one prompt."""

    completions: list[list[int]]
    """Token ids of each sample, up to and including its first EOS."""
    texts: list[str]
    """Each sample decoded, special tokens dropped."""
    finished: list[bool]
    """Whether each sample ended with EOS (else it was cut at ``max_new_tokens``)."""
    scores: list[float | None] | None = None
    """One score per sample once scored (``None`` for an unscored one)."""


def derive_seed(*parts: object) -> int:
    """A seed from any parts (base seed, step, rank, ...): stable across runs and machines, unlike ``hash``."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") % (2**63 - 1)


def context_length(model: nn.Module) -> int | None:
    """The longest sequence the model's positions cover, from its config (``None`` when it does not say)."""
    config = getattr(model, "config", None)
    if config is None and hasattr(model, "get_base_model"):  # a PEFT model
        config = getattr(model.get_base_model(), "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def check_room(
    lengths: Sequence[int], locations: Sequence[str], max_new_tokens: int, context: int | None, model_name: str = ""
) -> None:
    """Raise, naming the first prompt whose tokens plus ``max_new_tokens`` exceed ``context``."""
    if context is None:
        return
    for length, location in zip(lengths, locations):
        if length + max_new_tokens > context:
            raise ValueError(
                f"prompt {location} has {length} tokens: with max_new_tokens={max_new_tokens} that is "
                f"{length + max_new_tokens} > the {context}-token context of the model"
                f"{' ' + model_name if model_name else ''}."
                " Lower max_prompt_length (prompts keep their last tokens) or max_new_tokens"
            )


def sample_groups(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: Sequence[Sequence[int]],
    k: int,
    settings: SamplingSettings,
    *,
    seed: int,
    batch_size: int | None = None,
    synced_gpus: bool = False,
) -> list[SampleGroup]:
    """``k`` samples of each prompt, decoded (not scored). ``batch_size`` counts prompts per ``generate`` call
    (``None``: all at once); every process must make the same calls when ``synced_gpus``."""
    if k < 1:
        raise ValueError(f"samples per prompt must be at least 1, got {k}")
    rows = [list(p) for p in prompt_ids for _ in range(k)]  # (P·k,) prompt-major
    eos = tokenizer.eos_token_id
    completions = generate_completions(
        model,
        rows,
        settings,
        eos_token_id=eos,
        pad_token_id=tokenizer.pad_token_id,
        batch_size=(batch_size or max(len(prompt_ids), 1)) * k,
        synced_gpus=synced_gpus,
        seed=seed,
    )
    texts = tokenizer.batch_decode(completions, skip_special_tokens=True)
    finished = [bool(c) and c[-1] == eos for c in completions]
    return [
        SampleGroup(completions[i * k : (i + 1) * k], texts[i * k : (i + 1) * k], finished[i * k : (i + 1) * k])
        for i in range(len(prompt_ids))
    ]


def score_groups(
    groups: Sequence[SampleGroup], scorer: Scorer, prompts: Sequence[Prompt], seed: int = 0
) -> list[SampleGroup]:
    """Fill each group's ``scores`` (in place; returned for chaining). A reward that draws random numbers
    leaves the caller's streams as they were."""
    with preserved_rng():
        scores = scorer.score([p.text for p in prompts], [g.texts for g in groups], [p.location for p in prompts], seed)
    for group, group_scores in zip(groups, scores):
        group.scores = group_scores
    return list(groups)


def sample_scored(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    prompts: Sequence[str],
    reward: RewardFn | str,
    *,
    k: int,
    settings: SamplingSettings | None = None,
    batch_size: int = 64,
    max_prompt_length: int | None = None,
) -> list[SampleGroup]:
    """``k`` scored samples of each prompt text (one group per prompt, in order): a convenience for scripts.

    The prompts are tokenised as training tokenises text prompts (BOS once; ``max_prompt_length`` keeps their
    end), batch b of ``batch_size`` prompts is sampled with a seed derived from ``settings.seed`` and b, and
    ``reward`` (a callable or a spec for ``load_reward``) scores them; invalid scores raise."""
    settings = settings or SamplingSettings()
    rows = [(f"prompt {i}", {"prompt": text}) for i, text in enumerate(prompts)]
    prompt_set = build_prompts(rows, tokenizer, max_prompt_length=max_prompt_length, strict=True)
    if len(prompt_set) != len(prompts):
        raise ValueError(f"{len(prompts) - len(prompt_set)} of the prompts are duplicates; pass each prompt once")
    name = reward if isinstance(reward, str) else getattr(reward, "__qualname__", "reward")
    scorer = Scorer(ScoringSettings(reward=name), reward=None if isinstance(reward, str) else reward)
    out: list[SampleGroup] = []
    for b, start in enumerate(range(0, len(prompt_set), batch_size)):
        batch = prompt_set.prompts[start : start + batch_size]
        groups = sample_groups(
            model, tokenizer, [p.ids for p in batch], k, settings, seed=derive_seed(settings.seed, b)
        )
        out.extend(score_groups(groups, scorer, batch, seed=b))
    return out
