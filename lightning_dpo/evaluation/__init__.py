"""The evaluation library: sampling, KL estimates, rewards and judges. It holds no task and no command.

- :mod:`~lightning_dpo.evaluation.generation`: sampling with HF ``generate`` in a forked RNG.
- :mod:`~lightning_dpo.evaluation.kl`: sequence log-probs of samples and the Monte-Carlo KL(πθ ‖ πref).
- :mod:`~lightning_dpo.evaluation.rewards`: pluggable rewards (dotted paths, HF reward models).
- :mod:`~lightning_dpo.evaluation.judges`: pairwise judges and the win rate with a Wilson interval.

The tools built on it (``lightning-dpo evaluate``, the plots) are in :mod:`lightning_dpo.tools`; the
bundled tasks' own rewards and judges in :mod:`lightning_dpo.tasks`.
"""

from lightning_dpo.evaluation.generation import SamplingSettings, generate_completions, preserved_rng
from lightning_dpo.evaluation.judges import Judge, WinRate, wilson_interval, win_rate
from lightning_dpo.evaluation.kl import Estimate, kl_estimate, sequence_logprobs
from lightning_dpo.evaluation.rewards import HFRewardModel, RewardFn, load_reward

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
    "preserved_rng",
    "sequence_logprobs",
    "wilson_interval",
    "win_rate",
]
