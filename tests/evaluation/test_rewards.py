"""Reward functions: dotted paths and a Hugging Face sequence-classification model."""

from __future__ import annotations

import pytest

from lightning_dpo.evaluation.rewards import HFRewardModel, load_reward
from lightning_dpo.tasks.politeness import politeness_reward


class ConstantReward:
    def __call__(self, prompts, completions):
        return [1.0] * len(completions)


def test_load_reward_from_dotted_paths():
    assert load_reward("lightning_dpo.tasks.politeness.politeness_reward") is politeness_reward
    assert load_reward("lightning_dpo.tasks.politeness:politeness_reward") is politeness_reward
    assert load_reward(politeness_reward) is politeness_reward
    instance = load_reward(f"{__name__}:ConstantReward")
    assert instance(["p"], ["a"]) == [1.0]
    with pytest.raises(ValueError, match="cannot import module"):
        load_reward("no_such_module.score")
    with pytest.raises(ValueError, match="has no attribute"):
        load_reward("lightning_dpo.evaluation.rewards.nothing_here")
    with pytest.raises(ValueError, match="hf:<model id or directory>"):
        load_reward("justaword")


def test_hf_sequence_classification_reward(tiny_reward_model_dir):
    reward = load_reward(f"hf:{tiny_reward_model_dir}")
    assert isinstance(reward, HFRewardModel) and isinstance(load_reward(str(tiny_reward_model_dir)), HFRewardModel)
    prompts, completions = ["\n\nHuman: Hi\n\nAssistant:"] * 3, [" Hello!", " Ugh.", " Hello there, how are you?"]
    batched = reward(prompts, completions)
    one_by_one = [reward([p], [c])[0] for p, c in zip(prompts, completions)]
    assert len(batched) == 3 and batched == pytest.approx(one_by_one, abs=1e-5)  # padding does not change a score
