"""Tests for the film-reviews task (reward, prompts, task text), its pair builder and its frontier helpers."""

from __future__ import annotations

import itertools
import json
import math
import random
import statistics
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
for path in (REPO_ROOT, REPO_ROOT / "scripts"):  # the package may not be installed in the test environment
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from best_of_n import best_of_n_kl, expected_max  # noqa: E402
from onpolicy_frontier import interpolate, pareto, smallest_gap  # noqa: E402

from lightning_dpo.tasks.reviews import (  # noqa: E402
    _ASPECTS,
    _GENRES,
    _ROLES,
    _TITLE_NOUNS,
    _TITLE_WORDS,
    GRADES,
    LEXICON,
    build_prompts,
    grade_distribution,
    sentiment_reward,
    sentiment_score,
    write_review,
)

DATA_DIR = REPO_ROOT / "lightning_dpo" / "assets" / "data" / "reviews"


def test_reward_is_the_mean_adjective_grade() -> None:
    assert sentiment_score(" The plot was superb.") == 1.0
    assert sentiment_score(" The plot was superb and the music was awful.") == 0.0
    assert sentiment_score(" The plot was good, the music dull, the cast okay.") == pytest.approx(0.0)
    assert sentiment_score(" Superb! Superb. SUPERB, good") == pytest.approx(0.875)  # case-insensitive mean
    assert sentiment_score(" The plot was decent, the ending dreadful.") == pytest.approx(-0.25)
    assert sentiment_score("") == 0.0 and sentiment_score(" Rating: 5 out of 5.") == 0.0
    assert sentiment_score(" goodness superbly") == 0.0  # whole words only
    # A mean, not a sum: more of the same adjective does not raise the score.
    assert sentiment_score(" good good good good") == sentiment_score(" good")


def test_reward_function_shape() -> None:
    assert sentiment_reward(["p", "q"], [" superb", " dull"]) == [1.0, -0.5]
    with pytest.raises(ValueError):
        sentiment_reward(["p"], [" a", " b"])


def test_no_lexicon_word_outside_the_adjectives() -> None:
    # Titles, genres, aspects, roles and prompt openings must never move the score.
    words = " ".join(_TITLE_WORDS + _TITLE_NOUNS + _GENRES + _ASPECTS + _ROLES)
    assert sentiment_score(words) == 0.0
    splits = build_prompts(seed=0)
    assert all(sentiment_score(p.text) == 0.0 for split in splits.values() for p in split)
    assert sorted(set(LEXICON.values())) == list(GRADES)


def test_prompts_are_deterministic_disjoint_and_sized() -> None:
    a, b = build_prompts(seed=0), build_prompts(seed=0)
    assert a == b and build_prompts(seed=1) != a
    assert [len(a[s]) for s in ("train", "val", "test")] == [2000, 200, 200]
    texts = {s: {p.text for p in a[s]} for s in a}
    assert all(len(texts[s]) == len(a[s]) for s in a)
    assert not (texts["train"] & texts["val"] or texts["train"] & texts["test"] or texts["val"] & texts["test"])


def test_grade_distribution() -> None:
    for stars in range(1, 6):
        probs = grade_distribution(stars)
        assert sum(probs) == pytest.approx(1.0)
        assert GRADES[probs.index(max(probs))] == (stars - 3) / 2  # peaked at the rating's centre
    assert 0.5 < grade_distribution(5)[-1] < 0.6  # a 5-star review's adjective is +1 only about half the time
    with pytest.raises(ValueError):
        grade_distribution(0)


def test_reviews_spread_over_the_reward_and_rarely_reach_the_top() -> None:
    rng = random.Random(0)
    prompts = build_prompts(seed=0)["train"][:500]
    reviews = [write_review(rng, p) for p in prompts for _ in range(4)]
    scores = [sentiment_score(r) for r in reviews]
    assert abs(statistics.fmean(scores)) < 0.05 and statistics.pstdev(scores) > 0.5
    assert 0.0 < sum(s == 1.0 for s in scores) / len(scores) < 0.05
    for review in reviews[::4][: len(prompts)]:
        assert review.startswith(" Rating: ") and "\n" not in review
        assert 3 <= sum(1 for w in review.replace(".", " ").replace(",", " ").split() if w in LEXICON) <= 5
    # The rating moves the grades: 5-star reviews score higher than 1-star ones, always on average.
    five = statistics.fmean(sentiment_score(write_review(rng, p, stars=5)) for p in prompts[:100])
    one = statistics.fmean(sentiment_score(write_review(rng, p, stars=1)) for p in prompts[:100])
    assert five > 0.6 and one < -0.6


def test_expected_max_is_exact_over_subsets() -> None:
    rewards = [0.3, -1.0, 0.5, 0.5, 2.0, 0.0]
    for n in range(1, len(rewards) + 1):
        subsets = list(itertools.combinations(rewards, n))
        assert expected_max(rewards, n) == pytest.approx(statistics.fmean(max(s) for s in subsets))
    assert expected_max(rewards, 1) == pytest.approx(statistics.fmean(rewards))
    with pytest.raises(ValueError):
        expected_max(rewards, 7)
    assert best_of_n_kl(1) == 0.0 and best_of_n_kl(64) == pytest.approx(math.log(64) - 63 / 64)


def test_frontier_gap() -> None:
    assert pareto([(2.0, 0.1), (0.0, 0.0), (1.0, 0.5), (3.0, 0.4)]) == [(0.0, 0.0), (1.0, 0.5)]
    curve = [(0.0, 0.0), (1.0, 0.5), (3.0, 0.9)]
    assert interpolate(curve, 2.0) == pytest.approx(0.7) and interpolate(curve, 9.0) == 0.9
    high = [(0.0, 0.0), (1.0, 0.6), (4.0, 1.0)]
    low = [(0.0, 0.0), (2.0, 0.5)]
    gap, at, end = smallest_gap(high, low)
    assert end == 2.0 and gap == pytest.approx(interpolate(high, 2.0) - 0.5) and at == 2.0
    crossing = [(0.0, 0.0), (0.5, 0.6), (2.0, 0.4)]  # above early, below later: the gap goes negative
    assert smallest_gap(low, crossing)[0] < 0


@pytest.mark.skipif(not (DATA_DIR / "train.jsonl").exists(), reason="the reviews pairs are not built")
def test_bundled_pairs_are_scored_by_the_reward() -> None:
    for split in ("train", "val", "test"):
        with (DATA_DIR / f"{split}.jsonl").open(encoding="utf-8") as f:
            records = [json.loads(line) for line in f]
        assert len(records) > 0.9 * len(build_prompts(seed=0)[split])
        for r in records:
            assert set(r) == {"prompt", "chosen", "rejected", "chosen_score", "rejected_score"}
            assert (
                r["chosen_score"]
                == sentiment_score(r["chosen"])
                > r["rejected_score"]
                == sentiment_score(r["rejected"])
            )
