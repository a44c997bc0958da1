"""Evaluating what DPO did: samples, the reward–KL frontier, win rates.

- :mod:`~lightning_dpo.evaluation.generation`: sampling with HF ``generate`` in a forked RNG.
- :mod:`~lightning_dpo.evaluation.kl`: sequence log-probs of samples and the Monte-Carlo KL(πθ ‖ πref).
- :mod:`~lightning_dpo.evaluation.rewards`: pluggable rewards, including the bundled task's rule.
- :mod:`~lightning_dpo.evaluation.judges`: pairwise judges and the win rate with a Wilson interval.
- :mod:`~lightning_dpo.evaluation.frontier`: ``lightning-dpo evaluate`` (CSV, samples, PNG).
"""

from lightning_dpo.evaluation.generation import SamplingSettings, generate_completions, preserved_rng
from lightning_dpo.evaluation.judges import Judge, WinRate, politeness_judge, win_rate, wilson_interval
from lightning_dpo.evaluation.kl import Estimate, kl_estimate, sequence_logprobs
from lightning_dpo.evaluation.rewards import HFRewardModel, RewardFn, load_reward, politeness_reward

__all__ = [
    "Estimate",
    "HFRewardModel",
    "Judge",
    "RewardFn",
    "SamplingSettings",
    "WinRate",
    "generate_completions",
    "kl_estimate",
    "load_reward",
    "politeness_judge",
    "politeness_reward",
    "preserved_rng",
    "sequence_logprobs",
    "wilson_interval",
    "win_rate",
]
