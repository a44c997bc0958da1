"""Pair rules over hand-made score groups: best vs worst, margins, rankings, ties and everything counted."""

from __future__ import annotations

import pytest

from lightning_dpo.onpolicy.pairing import Pair, PairCounts, PairSettings, pair_group, pair_groups, rank_group

ALL = [True, True, True, True]


def test_best_vs_worst_takes_the_first_of_equals():
    pairs, counts = pair_group([0.5, 1.0, -1.0, 1.0, -1.0], [True] * 5)
    assert pairs == [Pair(1, 2)]
    assert (counts.pairs, counts.grouped, counts.all_equal) == (1, 1, 0)


def test_unusable_and_unscored_samples_are_never_paired_but_counted():
    # the 2.0 is cut at max_new_tokens (unusable); the NaN-skipped sample is None
    pairs, counts = pair_group([0.5, 2.0, None, -0.5], [True, False, True, True])
    assert pairs == [Pair(0, 3)]
    assert (counts.unusable, counts.unscored, counts.samples) == (1, 1, 4)


def test_all_equal_groups_are_skipped_and_counted_or_paired_as_trl_does():
    pairs, counts = pair_group([0.2, 0.2, 0.2], [True] * 3)
    assert pairs == [] and counts.all_equal == 1 and counts.pairs == 0
    pairs, counts = pair_group([0.2, 0.2], [True, True], PairSettings(ties="first"))
    assert pairs == [Pair(0, 1)] and counts.all_equal == 1 and counts.pairs == 1


def test_too_few_usable_samples():
    pairs, counts = pair_group([1.0, 0.0], [True, False])
    assert pairs == [] and counts.too_few == 1 and counts.unusable == 1


def test_margin_rule_counts_ties_and_small_margins():
    settings = PairSettings(rule="margin", margin=0.5)
    pairs, counts = pair_group([1.0, 0.0, 0.0, 0.8], ALL, settings)
    # (0,1) 1.0, (0,2) 1.0, (0,3) 0.2 below, (1,2) tie, (1,3) 0.8, (2,3) 0.8
    assert pairs == [Pair(0, 1), Pair(0, 2), Pair(3, 1), Pair(3, 2)]
    assert (counts.pairs, counts.ties, counts.below_margin, counts.grouped) == (4, 1, 1, 1)
    pairs, counts = pair_group([0.3, 0.3, 0.3], [True] * 3, settings)
    assert pairs == [] and counts.all_equal == 1


def test_identical_samples_make_no_duplicate_pairs():
    pairs, counts = pair_group([1.0, 0.0, 0.0], [True] * 3, PairSettings(rule="margin"), keys=["a", "b", "b"])
    assert pairs == [Pair(0, 1)] and (counts.pairs, counts.duplicates, counts.ties) == (1, 1, 1)


def test_margin_zero_makes_every_pair_with_a_preference():
    pairs, counts = pair_group([1.0, 0.0, 0.0], [True] * 3, PairSettings(rule="margin"))
    assert pairs == [Pair(0, 1), Pair(0, 2)] and counts.ties == 1


def test_counts_add_over_groups():
    groups = [[1.0, 0.0], [0.5, 0.5], [None, 1.0]]
    pairs, counts = pair_groups(groups, [[True, True]] * 3)
    assert pairs == [[Pair(0, 1)], [], []]
    assert counts == PairCounts(groups=3, samples=6, pairs=1, grouped=1, all_equal=1, too_few=1, unscored=1)
    assert "1 pairs from 3 prompts" in counts.summary() and "all equal: 1" in counts.summary()


def test_settings_are_checked():
    with pytest.raises(ValueError, match="rule"):
        PairSettings(rule="best")
    with pytest.raises(ValueError, match="margin"):
        PairSettings(rule="margin", margin=-1)
    with pytest.raises(ValueError, match="ties 'first'"):
        PairSettings(rule="margin", ties="first")
    with pytest.raises(ValueError, match="ties 'first'"):
        PairSettings(rule="ranking", ties="first")
    with pytest.raises(ValueError, match="margin goes with rule 'margin'"):
        PairSettings(rule="ranking", margin=0.5)
    with pytest.raises(ValueError, match="call rank_group"):
        pair_group([1.0, 0.0], [True, True], PairSettings(rule="ranking"))


def test_a_ranking_orders_all_k_best_first_equals_in_their_order():
    order, counts = rank_group([0.1, 0.9, 0.5, 0.9], ALL)
    assert order == [1, 3, 2, 0]
    assert counts == PairCounts(groups=1, samples=4, grouped=1, rankings=1)
    assert counts.summary("rankings").startswith("1 rankings from 1 prompts (4 samples)")


@pytest.mark.parametrize(
    "scores, usable, reason",
    [
        ([0.3, 0.3, 0.3, 0.3], ALL, "all_equal"),
        ([0.9, None, 0.5, 0.1], ALL, "partial"),  # a ranking keeps all K: one unscored sample drops the prompt
        ([0.9, 0.8, 0.5, 0.1], [True, True, False, True], "partial"),
        ([0.9, None, None, 0.1], [True, True, True, False], "too_few"),
    ],
)
def test_a_group_that_gives_no_ranking_is_counted_by_its_reason(scores, usable, reason):
    order, counts = rank_group(scores, usable)
    assert order == [] and counts.rankings == 0 and getattr(counts, reason) == 1
    assert f"{reason.replace('_', ' ')}: 1" in counts.summary("rankings")
