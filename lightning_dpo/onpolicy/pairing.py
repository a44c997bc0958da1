"""Preference pairs from scored samples: pure functions over one prompt's K scores.

A *group* is the K samples of one prompt: a score per sample (``None`` when it could not be scored) and
whether the sample may be paired at all (``usable``: offline pairs leave out samples cut at
``max_new_tokens``, since training appends EOS to every completion of a data file). Within a group:

- ``best_vs_worst`` (the default; the DPO paper's recipe for on-policy data): the highest-scored usable
  sample is chosen, the lowest-scored rejected, the earliest among equals. A group whose usable samples
  all score the same expresses no preference: it is counted in ``all_equal`` and gives no pair, unless
  ``ties="first"``, which pairs the first usable sample (chosen) with the second as TRL's
  ``OnlineDPOTrainer`` does with K = 2 (its ``first_half >= second_half``).
- ``margin``: every pair (i, j) whose score margin is at least ``margin`` (and above 0), the higher-scored
  sample chosen. Equal scores are ``ties`` and smaller margins ``below_margin``; both are counted and
  skipped. A group whose usable samples all score the same is also counted in ``all_equal``.
- ``ranking``: no pairs; the group's K samples best first, as one ranking for ``RankingDataModule`` and the
  ``plackett_luce`` loss (:func:`rank_group`). A ranking keeps all K, so a group with an unusable or
  unscored sample gives none (``partial``), and neither does one whose samples all score the same. Equal
  scores inside a ranking are ties, which the loss handles (``data/groups.py``).

Nothing is dropped silently: :class:`PairCounts` says what every sample and group became.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Literal, NamedTuple

PairRule = Literal["best_vs_worst", "margin", "ranking"]


@dataclass(frozen=True)
class PairSettings:
    """How a prompt's scored samples become preference pairs: ``pairs`` on the command line and in YAML."""

    rule: PairRule = "best_vs_worst"
    """``best_vs_worst``: one pair per prompt, its best-scored sample against its worst. ``margin``: every pair
    of samples whose scores differ by at least ``margin``. ``ranking`` (``lightning-dpo generate`` only): each
    prompt's K samples as one ranking with their scores, for ``RankingDataModule`` and ``plackett_luce``."""
    margin: float = 0.0
    """The smallest score margin of a pair under ``rule: margin``; pairs with equal scores are never made."""
    ties: Literal["skip", "first"] = "skip"
    """``skip``: a prompt whose samples all score the same gives no pair (counted). ``first`` (``best_vs_worst``
    only): pair its first sample (chosen) with its second anyway, as TRL's ``OnlineDPOTrainer`` does."""

    def __post_init__(self) -> None:
        if self.rule not in ("best_vs_worst", "margin", "ranking"):
            raise ValueError(f"pairs.rule must be 'best_vs_worst', 'margin' or 'ranking', got {self.rule!r}")
        if self.ties not in ("skip", "first"):
            raise ValueError(f"pairs.ties must be 'skip' or 'first', got {self.ties!r}")
        if not self.margin >= 0:
            raise ValueError(f"pairs.margin must be >= 0, got {self.margin}")
        if self.rule != "best_vs_worst" and self.ties == "first":
            raise ValueError(
                f"pairs.ties 'first' is TRL's rule for best_vs_worst; under rule {self.rule!r} ties are not paired"
            )
        if self.rule == "ranking" and self.margin:
            raise ValueError("pairs.margin goes with rule 'margin'; a ranking keeps every sample with its score")


class Pair(NamedTuple):
    """Indices of the chosen and the rejected sample within their group."""

    chosen: int
    rejected: int


@dataclass
class PairCounts:
    """What the samples and groups became. Counts add up over groups (``+``)."""

    groups: int = 0
    """Prompts seen."""
    samples: int = 0
    """Samples seen."""
    pairs: int = 0
    """Pairs made."""
    grouped: int = 0
    """Prompts that gave at least one pair."""
    all_equal: int = 0
    """Prompts whose usable samples all score the same (no pair unless ``ties: first``)."""
    ties: int = 0
    """Candidate pairs skipped under ``rule: margin`` because their scores are equal."""
    below_margin: int = 0
    """Candidate pairs skipped under ``rule: margin`` because their margin is below ``margin``."""
    too_few: int = 0
    """Prompts with fewer than two usable, scored samples."""
    unscored: int = 0
    """Samples without a valid score (a NaN or a failed judge, skipped with ``on_invalid: skip``)."""
    unusable: int = 0
    """Scored samples that may not be paired (cut at ``max_new_tokens`` without EOS, or empty)."""
    duplicates: int = 0
    """Pairs left out because the same two completions (equal ``keys``) were already paired for the prompt."""
    rankings: int = 0
    """Rankings made (``rule: ranking``), one per prompt."""
    partial: int = 0
    """Prompts left out of rankings because some of their samples, not all, are unusable or unscored."""

    def __add__(self, other: PairCounts) -> PairCounts:
        return PairCounts(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    def to_dict(self) -> dict[str, int]:
        return asdict(self)

    def summary(self, made: str = "pairs") -> str:
        """One line for people: the pairs (or ``rankings``) and every reason something gave none."""
        parts = [f"{getattr(self, made)} {made} from {self.groups} prompts ({self.samples} samples)"]
        reasons = ("all_equal", "ties", "below_margin", "too_few", "partial", "unscored", "unusable", "duplicates")
        for name in reasons:
            if getattr(self, name):
                parts.append(f"{name.replace('_', ' ')}: {getattr(self, name)}")
        return "; ".join(parts)


def pair_group(
    scores: Sequence[float | None],
    usable: Sequence[bool],
    settings: PairSettings = PairSettings(),
    keys: Sequence[Hashable] | None = None,
) -> tuple[list[Pair], PairCounts]:
    """The pairs of one group (indices into it) and its counts; see the module docstring for the rules.

    ``keys`` (e.g. each sample's text) say which samples are the same completion: a pair whose two keys were
    already paired is a duplicate (counted, left out), as two identical samples under ``rule: margin`` give.
    """
    if len(scores) != len(usable) or (keys is not None and len(keys) != len(scores)):
        raise ValueError(f"{len(scores)} scores but {len(usable)} usable flags and {len(keys or scores)} keys")
    if settings.rule == "ranking":
        raise ValueError("rule 'ranking' makes rankings, not pairs: call rank_group")
    pairs, counts = _pair_group(scores, usable, settings)
    if keys is None or len(pairs) < 2:
        return pairs, counts
    seen, unique = set(), []
    for pair in pairs:
        key = (keys[pair.chosen], keys[pair.rejected])
        if key in seen:
            counts.duplicates += 1
            continue
        seen.add(key)
        unique.append(pair)
    counts.pairs = len(unique)
    return unique, counts


def rank_group(scores: Sequence[float | None], usable: Sequence[bool]) -> tuple[list[int], PairCounts]:
    """``rule: ranking``: the indices of the group's samples, best first (equal scores keep their order), and
    its counts; ``[]`` when it gives no ranking: fewer than two usable scored samples (``too_few``), some
    but not all (``partial``), or every score equal (``all_equal``)."""
    if len(scores) != len(usable):
        raise ValueError(f"{len(scores)} scores but {len(usable)} usable flags")
    candidates, counts = _candidates(scores, usable)
    if counts.too_few:
        return [], counts
    if len(candidates) < len(scores):
        counts.partial = 1
        return [], counts
    values = [float(s) for s in scores]  # type: ignore[arg-type]
    if max(values) == min(values):
        counts.all_equal = 1
        return [], counts
    counts.rankings = counts.grouped = 1
    return sorted(range(len(values)), key=lambda i: -values[i]), counts


def _candidates(scores: Sequence[float | None], usable: Sequence[bool]) -> tuple[list[int], PairCounts]:
    """The samples that may be paired (scored and usable), and the group's counts so far."""
    counts = PairCounts(groups=1, samples=len(scores))
    counts.unscored = sum(s is None for s in scores)
    counts.unusable = sum(s is not None and not u for s, u in zip(scores, usable))
    candidates = [i for i, (s, u) in enumerate(zip(scores, usable)) if s is not None and u]
    counts.too_few = int(len(candidates) < 2)
    return candidates, counts


def _pair_group(
    scores: Sequence[float | None], usable: Sequence[bool], settings: PairSettings
) -> tuple[list[Pair], PairCounts]:
    candidates, counts = _candidates(scores, usable)
    if counts.too_few:
        return [], counts
    values = [float(scores[i]) for i in candidates]  # type: ignore[arg-type]
    if max(values) == min(values):
        counts.all_equal = 1
        if settings.rule == "best_vs_worst" and settings.ties == "first":
            counts.pairs = counts.grouped = 1
            return [Pair(candidates[0], candidates[1])], counts
        return [], counts
    if settings.rule == "best_vs_worst":
        best = candidates[values.index(max(values))]  # index() finds the first of equals
        worst = candidates[values.index(min(values))]
        counts.pairs = counts.grouped = 1
        return [Pair(best, worst)], counts
    pairs = []
    for a, i in enumerate(candidates):
        for j in candidates[a + 1 :]:
            si, sj = float(scores[i]), float(scores[j])  # type: ignore[arg-type]
            if si == sj:
                counts.ties += 1
            elif abs(si - sj) < settings.margin:
                counts.below_margin += 1
            else:
                pairs.append(Pair(i, j) if si > sj else Pair(j, i))
    counts.pairs, counts.grouped = len(pairs), int(bool(pairs))
    return pairs, counts


def pair_groups(
    scores: Sequence[Sequence[float | None]],
    usable: Sequence[Sequence[bool]],
    settings: PairSettings = PairSettings(),
    keys: Sequence[Sequence[Hashable]] | None = None,
) -> tuple[list[list[Pair]], PairCounts]:
    """:func:`pair_group` over every group: the pairs per group and the counts summed."""
    if len(scores) != len(usable):
        raise ValueError(f"{len(scores)} score groups but {len(usable)} usable groups")
    out, total = [], PairCounts()
    for i, (group_scores, group_usable) in enumerate(zip(scores, usable)):
        pairs, counts = pair_group(group_scores, group_usable, settings, keys[i] if keys is not None else None)
        out.append(pairs)
        total = total + counts
    return out, total
