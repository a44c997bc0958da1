"""The "film reviews" task: the DPO paper's controlled-sentiment experiment (IMDb, Fig. 2) in miniature.

In the paper the prompts are prefixes of IMDb reviews, the SFT model is GPT-2 fine-tuned on reviews, the
reward is a sentiment classifier's score, and the preference pairs are *the SFT model's own samples*
labelled by that reward. Here every part is small, synthetic and rebuilt by a script:

* **Prompts** (:func:`build_prompts`): the opening sentence of a review, naming a film, its genre and
  its lead, e.g. ``"I watched The Silent Harbor, a western starring Mara Quinn."``. Deterministic
  train / val / test splits with disjoint prompt texts.
* **Task text** (:func:`write_review`): what the SFT model is trained on. A review continues the prompt
  with a star rating (``"Rating: 4 out of 5."``, uniform over 1..5), two or three sentences about the
  film's aspects and lead, and an overall verdict. Every sentiment adjective is drawn around the rating,
  so the reviews, and the SFT model's samples, spread over the whole reward range. The rating is written
  first so that a tiny model can condition on it (inferring an unwritten rating from earlier adjectives
  was measured to be too hard for it: its samples then spread half as wide as the reviews). Everything
  else (which aspects, which sentences, their order, intensifiers such as "really") is random and does
  not move the reward: the reward-irrelevant entropy that the paper's Preferred-FT baseline pays KL to
  copy.
* **Reward** (:func:`sentiment_score`, :func:`sentiment_reward`): graded, not pass/fail. Every adjective
  of the fixed lexicon :data:`LEXICON` has a grade in ``{-1, -0.5, 0, +0.5, +1}`` (``"awful"`` -1,
  ``"dull"`` -0.5, ``"okay"`` 0, ``"good"`` +0.5, ``"superb"`` +1); the score of a completion is the
  **mean grade of the lexicon adjectives it contains** (whole words, case-insensitive), in ``[-1, 1]``,
  and 0 when it contains none. The top score needs *every* adjective to be one of the strongest
  positive ones; even a 5-star review draws a strong one only about half the time per adjective, so
  the SFT model's samples rarely reach it, and pairs of its samples disagree in grade, not just sign.

Because the pairs are sampled from the SFT model, the chosen side is only the better of a few samples,
not the best possible answer: copying it (Preferred-FT) reaches at most the reward of the chosen
samples, while DPO can move further along the reward's gradient. That is the setting in which the
paper's reward–KL frontier has DPO above Preferred-FT.

The lexicon is the only thing the reward reads; no word of it appears in a prompt, a title, a name, an
aspect or an intensifier, so the surrounding text never moves the score.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = [
    "GRADES",
    "LEXICON",
    "FilmPrompt",
    "build_prompts",
    "grade_distribution",
    "review_text",
    "sentiment_reward",
    "sentiment_score",
    "write_review",
]

GRADES: tuple[float, ...] = (-1.0, -0.5, 0.0, 0.5, 1.0)
"""The sentiment grades of the lexicon's adjectives, worst to best."""

# Six adjectives per grade; each reads well after "was" and before "film".
_ADJECTIVES: dict[float, tuple[str, ...]] = {
    -1.0: ("awful", "terrible", "dreadful", "horrible", "painful", "dire"),
    -0.5: ("dull", "weak", "flat", "bland", "clumsy", "tedious"),
    0.0: ("okay", "average", "ordinary", "passable", "standard", "forgettable"),
    0.5: ("good", "solid", "nice", "pleasant", "charming", "decent"),
    1.0: ("brilliant", "superb", "wonderful", "stunning", "masterful", "outstanding"),
}
LEXICON: dict[str, float] = {word: grade for grade, words in _ADJECTIVES.items() for word in words}
"""Adjective -> sentiment grade: the whole of the reward's vocabulary."""

_LEXICON_RE = re.compile(r"\b(?:" + "|".join(sorted(LEXICON, key=len, reverse=True)) + r")\b", re.I)


def sentiment_score(text: str) -> float:
    """Mean grade of the lexicon adjectives in ``text``, in ``[-1, 1]``; ``0.0`` when there are none.

    A mean, not a sum, so that writing more adjectives (or a longer review) does not raise the score;
    only their grades do.
    """
    grades = [LEXICON[m.lower()] for m in _LEXICON_RE.findall(text)]
    return sum(grades) / len(grades) if grades else 0.0


def sentiment_reward(prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
    """The task's reward, ``(prompts, completions) -> rewards`` as ``lightning-dpo evaluate --reward`` takes
    it: :func:`sentiment_score` of each completion (prompts carry no lexicon word and are not scored)."""
    if len(prompts) != len(completions):
        raise ValueError(f"{len(prompts)} prompts but {len(completions)} completions")
    return [sentiment_score(c) for c in completions]


# -- prompts ---------------------------------------------------------------------------------------

_TITLE_WORDS = (
    "Silent",
    "Crimson",
    "Last",
    "Hidden",
    "Broken",
    "Golden",
    "Distant",
    "Frozen",
    "Electric",
    "Quiet",
    "Northern",
    "Lonely",
    "Burning",
    "Secret",
    "Endless",
    "Paper",
    "Midnight",
    "Iron",
    "Velvet",
    "Wild",
)
_TITLE_NOUNS = (
    "Harbor",
    "Garden",
    "Signal",
    "River",
    "Letter",
    "Mountain",
    "Station",
    "Island",
    "Mirror",
    "Road",
    "Tower",
    "Summer",
    "Winter",
    "Orchard",
    "Bridge",
    "Lantern",
    "Forest",
    "Voyage",
    "Castle",
    "Valley",
)
_GENRES = (
    "drama",
    "comedy",
    "thriller",
    "western",
    "musical",
    "romance",
    "mystery",
    "war film",
    "science fiction film",
    "horror film",
)
_FIRST_NAMES = ("Mara", "Jonah", "Elsa", "Victor", "Nina", "Omar", "Clara", "Felix", "Iris", "Hugo", "Lena", "Theo")
_LAST_NAMES = ("Quinn", "Alvarez", "Brooks", "Okafor", "Lindqvist", "Moreau", "Tanaka", "Novak", "Reyes", "Hale",
               "Sato", "Byrne")  # fmt: skip
_OPENINGS = (
    "I watched {title}, a {genre} starring {lead}.",
    "Last night I saw {title}, the new {genre} with {lead}.",
    "{title} is a {genre} starring {lead}.",
    "My review of {title}, a {genre} with {lead}.",
    "We went to see {title}, a {genre} led by {lead}.",
)


@dataclass(frozen=True)
class FilmPrompt:
    """The facts a prompt states: the review continues them (the lead is named again, the genre reused)."""

    title: str
    genre: str
    lead: str
    opening: int
    """Index into the opening-sentence templates."""

    @property
    def text(self) -> str:
        return _OPENINGS[self.opening].format(title=self.title, genre=self.genre, lead=self.lead)


def _all_prompts() -> list[FilmPrompt]:
    """Every prompt, in a fixed order (nested tuples only: no hash-order dependence)."""
    return [
        FilmPrompt(f"The {w} {n}", genre, f"{first} {last}", o)
        for w in _TITLE_WORDS for n in _TITLE_NOUNS for genre in _GENRES
        for first in _FIRST_NAMES for last in _LAST_NAMES for o in range(len(_OPENINGS))
    ]  # fmt: skip


def build_prompts(
    seed: int = 0, n_train: int = 2000, n_val: int = 200, n_test: int = 200
) -> dict[str, list[FilmPrompt]]:
    """Deterministic, disjoint ``{"train", "val", "test"}`` prompt lists (distinct prompt texts).

    A seeded draw without replacement from all title × genre × lead × opening combinations (about 2.9M),
    so the same film or lead recurs across splits but no prompt text does. Pure: a private RNG.
    """
    pool = _all_prompts()
    total = n_train + n_val + n_test
    if min(n_train, n_val, n_test) < 0 or total > len(pool):
        raise ValueError(f"split sizes must be >= 0 and sum to at most {len(pool)}, got {n_train}/{n_val}/{n_test}")
    picked = [pool[i] for i in random.Random(seed).sample(range(len(pool)), total)]
    return {"train": picked[:n_train], "val": picked[n_train : n_train + n_val], "test": picked[n_train + n_val :]}


# -- the task text the SFT model learns ------------------------------------------------------------

_ASPECTS = (
    "acting",
    "plot",
    "music",
    "pacing",
    "dialogue",
    "ending",
    "script",
    "camera work",
    "soundtrack",
    "direction",
    "story",
    "cast",
    "editing",
    "set design",
)
_ROLES = ("detective", "mother", "captain", "villain", "teacher", "stranger", "pilot", "doctor", "singer", "soldier")
_INTENSIFIERS = ("", "", "", "really ", "quite ", "truly ", "rather ")
_VERDICTS = (
    "Overall, {a_adj} {genre}.",
    "All in all, {title} is {adj}.",
    "In the end, it was {a_adj} {genre}.",
    "My verdict: {adj}.",
)

GRADE_SPREAD = 0.5
"""σ of the grade around a review's centre, in grade units: how far one adjective strays from the rating."""


def grade_distribution(stars: int, spread: float = GRADE_SPREAD) -> list[float]:
    """P(grade | stars) for each of :data:`GRADES`: a discretised Gaussian around ``(stars - 3) / 2``.

    With the default spread a 5-star review draws a +1 adjective with probability 0.57 (0.35 for +0.5,
    0.08 for 0), so a review with four adjectives all at +1 is rare even among 5-star ones.
    """
    if not 1 <= stars <= 5:
        raise ValueError(f"stars must be 1..5, got {stars}")
    centre = (stars - 3) / 2
    weights = [math.exp(-((g - centre) ** 2) / (2 * spread**2)) for g in GRADES]
    total = sum(weights)
    return [w / total for w in weights]


def _adjective(rng: random.Random, probs: list[float]) -> str:
    grade = rng.choices(GRADES, weights=probs)[0]
    return rng.choice(_INTENSIFIERS) + rng.choice(_ADJECTIVES[grade])


def _a(phrase: str) -> str:
    return ("an " if phrase[0] in "aeiou" else "a ") + phrase


def write_review(rng: random.Random, prompt: FilmPrompt, stars: int | None = None) -> str:
    """One continuation of ``prompt`` (leading space, no trailing newline).

    The rating (uniform over 1..5 unless given), two or three body sentences (an aspect, two aspects, the
    lead in their role) and a verdict; 3 to 5 lexicon adjectives, each drawn from
    :func:`grade_distribution` of the rating. Only the adjectives' grades depend on the rating; the
    rating itself is not a lexicon word and does not count.
    """
    stars = rng.randint(1, 5) if stars is None else stars
    probs = grade_distribution(stars)
    aspects = rng.sample(_ASPECTS, 4)  # distinct aspects within a review
    kinds = rng.sample(("one", "two", "lead"), rng.randint(2, 3))
    sentences = [f"Rating: {stars} out of 5."]
    for kind in kinds:
        if kind == "one":
            sentences.append(f"The {aspects.pop()} was {_adjective(rng, probs)}.")
        elif kind == "two":
            a, b = aspects.pop(), aspects.pop()
            sentences.append(f"The {a} felt {_adjective(rng, probs)}, and the {b} was {_adjective(rng, probs)}.")
        else:
            sentences.append(f"{prompt.lead} was {_adjective(rng, probs)} as the {rng.choice(_ROLES)}.")
    verdict = rng.choice(_VERDICTS)
    adj = _adjective(rng, probs)
    sentences.append(verdict.format(adj=adj, a_adj=_a(adj), genre=prompt.genre, title=prompt.title))
    return " " + " ".join(sentences)


def review_text(prompt: FilmPrompt, completion: str) -> str:
    """Prompt + completion as one review (what the SFT model reads)."""
    return prompt.text + completion
