"""Judges and the win rate: presentation order, counting, the Wilson interval."""

from __future__ import annotations

import pytest

from lightning_dpo.evaluation.judges import judge_pairs, summarize, wilson_interval, win_rate
from lightning_dpo.tasks.politeness import politeness_judge

POLITE, RUDE, PLAIN = " Of course! 2 plus 2 is 4.", " Ugh. 2 plus 2 is 4.", " 2 plus 2 is 4."


def test_the_judge_sees_the_candidate_in_random_seeded_order():
    seen: list[str] = []

    def first_position(prompt: str, a: str, b: str) -> float:
        seen.append(a)
        return 1.0  # always prefers whatever is shown first

    n = 400
    prompts, cands, bases = ["p"] * n, ["cand"] * n, ["base"] * n
    prefs = judge_pairs(prompts, cands, bases, first_position, seed=0)
    shown_first = seen.count("cand")
    assert 150 < shown_first < 250  # both orders occur, about equally often
    # The answer is mapped back: the candidate "wins" exactly when it was shown first.
    assert [p == 1.0 for p in prefs] == [s == "cand" for s in seen]
    # A position-biased judge cannot make the candidate look better or worse than chance.
    assert summarize(prefs).low < 0.5 < summarize(prefs).high
    # Seeded: the same order again; another seed, another order.
    seen.clear()
    assert judge_pairs(prompts, cands, bases, first_position, seed=0) == prefs
    seen.clear()
    assert judge_pairs(prompts, cands, bases, first_position, seed=1) != prefs


def test_an_order_independent_judge_gives_the_same_result_for_any_seed():
    prompts = ["p"] * 6
    cands = [POLITE, POLITE, RUDE, PLAIN, POLITE, RUDE]
    bases = [RUDE, POLITE, POLITE, PLAIN, PLAIN, PLAIN]
    expected = [1.0, 0.5, 0.0, 0.5, 1.0, 0.0]
    for seed in range(5):
        assert judge_pairs(prompts, cands, bases, politeness_judge, seed=seed) == expected
    result = win_rate(prompts, cands, bases, politeness_judge)
    assert (result.wins, result.ties, result.losses, result.n) == (2, 2, 2, 6)
    assert result.rate == pytest.approx(0.5)  # ties count half


def test_wilson_interval_by_hand():
    # 8 of 10 at 95 %: the textbook interval [0.490, 0.943].
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.4902, abs=1e-3) and high == pytest.approx(0.9433, abs=1e-3)
    low, high = wilson_interval(0, 20)
    assert low == pytest.approx(0.0, abs=1e-12) and 0.1 < high < 0.2  # stays inside [0, 1], unlike p ± z·se
    low, high = wilson_interval(50, 100, confidence=0.99)
    assert low == pytest.approx(1 - high) and high - low > 2 * (wilson_interval(50, 100)[1] - 0.5)


def test_bad_judges_and_inputs_are_reported():
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        judge_pairs(["p"], ["a"], ["b"], lambda p, a, b: 2.0)
    with pytest.raises(ValueError, match="lengths differ"):
        judge_pairs(["p"], ["a", "b"], ["b"], politeness_judge)
