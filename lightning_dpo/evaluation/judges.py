"""Pairwise judges and the win rate of a model's completions against a baseline's.

A judge is a callable ``(prompt, a, b) -> preference`` where the preference is the probability that ``a``
is the better completion: ``1.0`` (a wins), ``0.0`` (b wins) or ``0.5`` (a tie); any value in [0, 1] is
accepted (a judge may be probabilistic).

The judge never knows which completion is the candidate: each pair is shown in an order drawn from a
seeded ``random.Random`` (as the DPO paper did with GPT-4), and the answer is mapped back. A judge biased
towards the first position then adds noise, not a systematic error.

Win rate = (wins + ½·ties) / n, with ties also reported on their own. The interval is Wilson's score
interval on that proportion (ties as half a success each), which stays inside [0, 1] and behaves at
rates near 0 or 1, unlike the normal approximation.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

Judge = Callable[[str, str, str], float]
"""(prompt, a, b) -> probability that a is better: 1 a wins, 0 b wins, 0.5 tie."""


@dataclass(frozen=True)
class WinRate:
    """Outcome counts of candidate-vs-baseline judgements and the win rate with its interval."""

    wins: int
    ties: int
    losses: int
    rate: float
    """(wins + ties / 2) / n."""
    low: float
    high: float
    """Wilson score interval at ``confidence``."""
    confidence: float

    @property
    def n(self) -> int:
        return self.wins + self.ties + self.losses

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "n": self.n}


def wilson_interval(successes: float, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion ``successes / n`` (successes may be fractional)."""
    if n <= 0:
        return (float("nan"), float("nan"))
    z = _normal_quantile(0.5 + confidence / 2)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def _normal_quantile(q: float) -> float:
    """Φ⁻¹(q) by bisection on math.erf (no scipy needed; 60 halvings reach double precision)."""
    lo, hi = -10.0, 10.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < q:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def judge_pairs(
    prompts: Sequence[str], candidates: Sequence[str], baselines: Sequence[str], judge: Judge, seed: int = 0
) -> list[float]:
    """The judge's preference for each candidate over its baseline, in [0, 1].

    Each pair is presented in a random order (``random.Random(seed)``, one coin per pair); when the
    candidate was shown second, the judge's answer p is mapped back to 1 − p.
    """
    if not len(prompts) == len(candidates) == len(baselines):
        raise ValueError(
            f"lengths differ: {len(prompts)} prompts, {len(candidates)} candidates, {len(baselines)} baselines"
        )
    rng = random.Random(seed)
    out = []
    for prompt, cand, base in zip(prompts, candidates, baselines):
        candidate_first = rng.random() < 0.5
        p = float(judge(prompt, cand, base) if candidate_first else judge(prompt, base, cand))
        if not 0.0 <= p <= 1.0:
            raise ValueError(
                f"the judge returned {p}; a judge returns the probability that its first completion is better, "
                "in [0, 1]"
            )
        out.append(p if candidate_first else 1.0 - p)
    return out


def summarize(preferences: Sequence[float], confidence: float = 0.95) -> WinRate:
    """Counts (a preference above ½ is a win, below a loss, exactly ½ a tie) and the win rate
    (mean preference, so ties count half) with a Wilson interval."""
    wins = sum(p > 0.5 for p in preferences)
    losses = sum(p < 0.5 for p in preferences)
    ties = len(preferences) - wins - losses
    n = len(preferences)
    rate = sum(preferences) / n if n else float("nan")
    low, high = wilson_interval(rate * n, n, confidence)
    return WinRate(wins, ties, losses, rate, low, high, confidence)


def win_rate(
    prompts: Sequence[str],
    candidates: Sequence[str],
    baselines: Sequence[str],
    judge: Judge,
    seed: int = 0,
    confidence: float = 0.95,
) -> WinRate:
    """Win rate of ``candidates`` against ``baselines`` (aligned by index) under ``judge``."""
    return summarize(judge_pairs(prompts, candidates, baselines, judge, seed), confidence)
