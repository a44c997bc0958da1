"""Rewards and judges that misbehave: each is an error naming the prompt, or (on_invalid: skip) an unscored,
counted sample."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from lightning_dpo.onpolicy.scoring import Scorer, ScoringError, ScoringSettings

PROMPTS = ["first prompt", "second prompt"]
GROUPS = [["a", "bb"], ["ccc", "dddd"]]
LOCATIONS = ["data.jsonl:1", "data.jsonl:2"]


def scorer(fn, kind="reward", on_invalid="error"):
    settings = ScoringSettings(**{kind: "test." + kind}, on_invalid=on_invalid)
    return Scorer(settings, **{kind: fn})


def test_a_reward_scores_every_sample_prompt_major():
    seen = []

    def length(prompts, completions):
        seen.append((list(prompts), list(completions)))
        return [float(len(c)) for c in completions]

    assert scorer(length).score(PROMPTS, GROUPS, LOCATIONS) == [[1.0, 2.0], [3.0, 4.0]]
    assert seen == [(["first prompt"] * 2 + ["second prompt"] * 2, ["a", "bb", "ccc", "dddd"])]


@pytest.mark.parametrize(
    "values", [np.array([1.0, 2.0, 3.0, 4.0]), torch.tensor([1, 2, 3, 4]), (1, 2, 3, 4), [np.float32(1), 2, 3, 4]]
)
def test_arrays_tensors_and_numpy_numbers_are_numbers(values):
    assert scorer(lambda p, c: values).score(PROMPTS, GROUPS, LOCATIONS)[1] == [3.0, 4.0]


def test_a_wrong_count_is_an_error_naming_the_prompts():
    with pytest.raises(ScoringError, match=r"returned 3 values for 4 completions.*data.jsonl:1"):
        scorer(lambda p, c: [0.0, 1.0, 2.0]).score(PROMPTS, GROUPS, LOCATIONS)


@pytest.mark.parametrize("bad", ["good", [1.0], torch.tensor([1.0, 2.0]), {"score": 1}])
def test_a_non_number_is_an_error_naming_the_prompt(bad):
    with pytest.raises(ScoringError, match=r"completion 1 of prompt data.jsonl:2 \('second prompt'\)"):
        scorer(lambda p, c: [0.0, 1.0, 2.0, bad]).score(PROMPTS, GROUPS, LOCATIONS)


def test_a_return_value_that_is_not_a_sequence_is_an_error():
    with pytest.raises(ScoringError, match="expected a sequence"):
        scorer(lambda p, c: 1.0).score(PROMPTS, GROUPS, LOCATIONS)


@pytest.mark.parametrize("bad", [math.nan, math.inf, None])
def test_nan_is_an_error_or_an_unscored_sample(bad):
    fn = lambda p, c: [0.0, bad, 2.0, 3.0]
    with pytest.raises(ScoringError, match=r"completion 1 of prompt data.jsonl:1 .*'bb'.*on_invalid: skip"):
        scorer(fn).score(PROMPTS, GROUPS, LOCATIONS)
    assert scorer(fn, on_invalid="skip").score(PROMPTS, GROUPS, LOCATIONS) == [[0.0, None], [2.0, 3.0]]


def test_a_judge_scores_each_sample_by_its_mean_preference_in_any_presentation_order():
    longer = lambda prompt, a, b: 1.0 if len(a) > len(b) else 0.0 if len(a) < len(b) else 0.5
    groups = [["a", "bbb", "cc"], ["x", "y", "zz"]]
    for seed in range(5):  # the order each pair is shown in changes; the scores do not
        out = scorer(longer, "judge").score(PROMPTS, groups, LOCATIONS, seed=seed)
        assert out == [[0.0, 1.0, 0.5], [0.25, 0.25, 1.0]]


def test_a_judge_that_raises_names_the_prompt_or_leaves_the_group_unscored():
    def judge(prompt, a, b):
        if prompt == "second prompt":
            raise RuntimeError("rate limited")
        return 1.0

    with pytest.raises(ScoringError, match=r"raised RuntimeError: rate limited on prompt data.jsonl:2"):
        scorer(judge, "judge").score(PROMPTS, GROUPS, LOCATIONS)
    out = scorer(judge, "judge", on_invalid="skip").score(PROMPTS, GROUPS, LOCATIONS)
    assert out[1] == [None, None] and None not in out[0]


@pytest.mark.parametrize("bad, error", [(1.5, "in \\[0, 1\\]"), (math.nan, "in \\[0, 1\\]"), ("a", "a number")])
def test_a_judge_answer_outside_zero_one_is_refused(bad, error):
    with pytest.raises(ScoringError, match=error):
        scorer(lambda p, a, b: bad, "judge").score(PROMPTS, GROUPS, LOCATIONS)


def test_scoring_needs_exactly_one_of_reward_and_judge():
    with pytest.raises(ValueError, match="exactly one"):
        ScoringSettings()
    with pytest.raises(ValueError, match="exactly one"):
        ScoringSettings(reward="a.b", judge="c.d")


def test_a_reward_named_by_its_dotted_path_is_loaded():
    out = Scorer(ScoringSettings(reward="lightning_dpo.tasks.politeness.politeness_reward")).score(
        ["q"], [[" Of course! It is 4.", " Ugh. It is 4."]], ["x:1"]
    )
    assert out == [[1.0, -1.0]]


def test_a_judge_with_a_random_order_uses_its_own_stream():
    random.seed(3)
    expected = random.random()
    random.seed(3)
    scorer(lambda p, a, b: 0.5, "judge").score(PROMPTS, GROUPS, LOCATIONS)
    assert random.random() == expected
