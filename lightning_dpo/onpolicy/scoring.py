"""Scoring the samples of each prompt with a reward or a pairwise judge, and checking what comes back.

A scorer turns one batch of groups (K completion texts per prompt) into one score per sample:

- a **reward**, ``(prompts, completions) -> rewards`` (:func:`lightning_dpo.evaluation.rewards.load_reward`: a
  dotted path, ``hf:<id or dir>`` for a sequence-classification model), called once per batch on the
  flattened ``P·K`` samples, prompt-major;
- a **pairwise judge**, ``(prompt, a, b) -> P(a better)`` (as in :mod:`lightning_dpo.evaluation.judges`),
  called on every pair of a group, each shown in a seeded random order (the answer mapped back). A sample's
  score is its mean preference over the group's other samples, in [0, 1]: for K = 2 the judge's own answer
  and its complement.

What comes back is checked, and a problem names the prompt (its source location and text):

- a wrong number of values, or a value that is not a real number (a string, a list, a tensor of several
  values), is a bug in the reward: :class:`ScoringError`, always;
- a NaN, an infinity or ``None`` (a reward that could not score), a judge's answer outside [0, 1], or a
  judge that raises: :class:`ScoringError` with ``on_invalid: error`` (the default); with ``on_invalid: skip``
  the sample (for a judge, the prompt's whole group) is left unscored, never paired, and counted.
"""

from __future__ import annotations

import math
import numbers
import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from lightning_dpo.errors import UserError
from lightning_dpo.evaluation.judges import Judge
from lightning_dpo.evaluation.rewards import RewardFn, load_reward
from lightning_dpo.settings import import_object

Scores = list[list[float | None]]
"""One score per sample, per prompt: ``None`` where the sample is left unscored."""


class ScoringError(UserError, ValueError):
    """A reward or judge gave something that cannot be trained on; the message names the prompt."""


@dataclass(frozen=True)
class ScoringSettings:
    """Who scores the samples: ``scoring`` on the command line and in YAML. Give a reward or a judge."""

    reward: str | None = None
    """A ``(prompts, completions) -> rewards`` callable (dotted path, e.g.
    ``lightning_dpo.tasks.politeness.politeness_reward``), or ``hf:<id or directory>`` for a Hugging Face
    sequence-classification reward model."""
    judge: str | None = None
    """Instead of a reward: the dotted path of a pairwise ``(prompt, a, b) -> P(a better)`` judge, e.g.
    ``lightning_dpo.tasks.politeness.politeness_judge``."""
    on_invalid: Literal["error", "skip"] = "error"
    """A NaN / infinite / ``None`` reward, a judge's answer outside [0, 1], or a judge that raises: ``error``
    stops with the prompt named; ``skip`` leaves the sample (the prompt's group, for a judge) unscored,
    unpaired and counted."""
    judge_seed: int = 0
    """Seed of the order in which a judge is shown each pair."""

    def __post_init__(self) -> None:
        if (self.reward is None) == (self.judge is None):
            raise ValueError(
                "scoring needs exactly one of reward or judge: a (prompts, completions) -> rewards callable "
                "(scoring.reward) or a pairwise (prompt, a, b) -> P(a better) judge (scoring.judge)"
            )
        if self.on_invalid not in ("error", "skip"):
            raise ValueError(f"scoring.on_invalid must be 'error' or 'skip', got {self.on_invalid!r}")


def _describe(spec: Any) -> str:
    if isinstance(spec, str):
        return repr(spec)
    return getattr(spec, "__qualname__", None) or type(spec).__name__


def _where(location: str, prompt: str) -> str:
    text = prompt if len(prompt) <= 80 else prompt[:77] + "..."
    return f"prompt {location} ({text!r})"


class Scorer:
    """Scores groups of samples; built from :class:`ScoringSettings`, or from callables directly.

    Args:
        settings: The reward or judge spec and the policy for invalid scores.
        reward: A reward callable to use instead of loading ``settings.reward``.
        judge: A judge callable to use instead of loading ``settings.judge``.
    """

    def __init__(self, settings: ScoringSettings, reward: RewardFn | None = None, judge: Judge | None = None) -> None:
        self.settings = settings
        self.name = _describe(settings.reward if settings.reward is not None else settings.judge)
        self._reward: RewardFn | None = reward
        self._judge: Judge | None = judge

    @property
    def uses_judge(self) -> bool:
        return self.settings.judge is not None

    def _load(self) -> None:
        if self.settings.reward is not None and self._reward is None:
            self._reward = load_reward(self.settings.reward)
        if self.settings.judge is not None and self._judge is None:
            judge = import_object(self.settings.judge)
            self._judge = judge() if isinstance(judge, type) else judge
            if not callable(self._judge):
                raise ValueError(f"judge {self.settings.judge!r} is not callable")

    def score(
        self, prompts: Sequence[str], groups: Sequence[Sequence[str]], locations: Sequence[str], seed: int = 0
    ) -> Scores:
        """One score per sample of each group (``None``: unscored). ``locations`` name the prompts in errors;
        ``seed`` varies a judge's presentation order between batches."""
        if not len(prompts) == len(groups) == len(locations):
            raise ValueError(f"{len(prompts)} prompts, {len(groups)} groups, {len(locations)} locations")
        self._load()
        if self.uses_judge:
            return [self._judge_group(p, g, loc, seed) for p, g, loc in zip(prompts, groups, locations)]
        return self._reward_groups(prompts, groups, locations)

    # -- rewards ---------------------------------------------------------------------------------------

    def _reward_groups(self, prompts: Sequence[str], groups: Sequence[Sequence[str]], locations: Sequence[str]):
        owner = [i for i, g in enumerate(groups) for _ in g]  # sample -> its prompt, prompt-major
        flat_prompts = [prompts[i] for i in owner]
        flat = [c for g in groups for c in g]
        values = self._reward(flat_prompts, flat)
        values = _as_list(values, f"reward {self.name}")
        if len(values) != len(flat):
            raise ScoringError(
                f"reward {self.name} returned {len(values)} values for {len(flat)} completions "
                f"({len(groups)} prompts, the first {_where(locations[0], prompts[0])}): a reward returns one "
                "number per completion, in order"
            )
        out: Scores = [[] for _ in groups]
        for n, (value, i) in enumerate(zip(values, owner)):
            sample = len(out[i])
            out[i].append(self._check(value, f"completion {sample} of {_where(locations[i], prompts[i])}", flat[n]))
        return out

    def _check(self, value: Any, where: str, completion: str) -> float | None:
        number = _as_number(value)
        if number is _NOT_A_NUMBER:
            raise ScoringError(
                f"reward {self.name} returned {value!r} ({type(value).__name__}) for {where}: a reward returns one "
                "real number per completion"
            )
        if number is None or not math.isfinite(number):
            if self.settings.on_invalid == "skip":
                return None
            raise ScoringError(
                f"reward {self.name} returned {value!r} for {where}, completion {completion[:80]!r}: nothing can be "
                "trained on an unscored sample (set scoring.on_invalid: skip to leave such samples out, counted)"
            )
        return number

    # -- judges ----------------------------------------------------------------------------------------

    def _judge_group(self, prompt: str, group: Sequence[str], location: str, seed: int) -> list[float | None]:
        k = len(group)
        if k < 2:
            raise ScoringError(f"a judge compares two samples, but {_where(location, prompt)} has {k}")
        rng = random.Random(f"{self.settings.judge_seed}|{seed}|{location}")
        wins = [0.0] * k
        for i in range(k):
            for j in range(i + 1, k):
                i_first = rng.random() < 0.5
                a, b = (group[i], group[j]) if i_first else (group[j], group[i])
                p = self._ask(prompt, a, b, location)
                if p is None:
                    return [None] * k
                p_i = p if i_first else 1.0 - p
                wins[i] += p_i
                wins[j] += 1.0 - p_i
        return [w / (k - 1) for w in wins]

    def _ask(self, prompt: str, a: str, b: str, location: str) -> float | None:
        where = _where(location, prompt)
        try:
            value = self._judge(prompt, a, b)
        except Exception as e:  # a judge's own failure: name the prompt, keep the cause
            if self.settings.on_invalid == "skip":
                return None
            raise ScoringError(
                f"judge {self.name} raised {type(e).__name__}: {e} on {where} (set scoring.on_invalid: skip to leave "
                "such prompts out, counted)"
            ) from e
        number = _as_number(value)
        if number is _NOT_A_NUMBER:
            raise ScoringError(
                f"judge {self.name} returned {value!r} ({type(value).__name__}) on {where}: a judge returns the "
                "probability that its first completion is better, a number in [0, 1]"
            )
        if number is None or not 0.0 <= number <= 1.0:  # NaN fails the comparison too
            if self.settings.on_invalid == "skip":
                return None
            raise ScoringError(
                f"judge {self.name} returned {value!r} on {where}: a judge returns the probability that its first "
                "completion is better, in [0, 1]"
            )
        return number


_NOT_A_NUMBER = object()


def _as_number(value: Any) -> float | None | object:
    """A real number as a float, ``None`` as ``None``, anything else (a string, several values) as
    ``_NOT_A_NUMBER``. Python and NumPy numbers count, and so do one-element tensors and arrays."""
    if value is None:
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    if hasattr(value, "item") and hasattr(value, "shape") and math.prod(value.shape) == 1:
        inner = value.item()
        return float(inner) if isinstance(inner, numbers.Real) else _NOT_A_NUMBER
    return _NOT_A_NUMBER


def _as_list(values: Any, name: str) -> list[Any]:
    """A reward's return value as a list: a sequence, or a 1-D array or tensor."""
    if hasattr(values, "shape") and hasattr(values, "tolist"):
        if len(values.shape) != 1:
            raise ScoringError(
                f"{name} returned an array of shape {tuple(values.shape)}; expected one value per sample"
            )
        return list(values.tolist())
    if isinstance(values, (str, bytes, Mapping)) or not isinstance(values, Iterable) or not hasattr(values, "__len__"):
        raise ScoringError(f"{name} returned a {type(values).__name__}; expected a sequence of one number per sample")
    return list(values)
