"""On-policy preference optimisation: pairs from a model's own samples, iterative and online DPO.

- :mod:`~lightning_dpo.onpolicy.sampling`: K samples per prompt through the evaluation library's generation.
- :mod:`~lightning_dpo.onpolicy.scoring`: a reward or a pairwise judge, with every score checked.
- :mod:`~lightning_dpo.onpolicy.pairing`: pure pair rules (best vs worst, margin) and rankings, ties counted.
- :mod:`~lightning_dpo.onpolicy.generate`: ``lightning-dpo generate``: a resumable, multi-device pairs file.
- :mod:`~lightning_dpo.onpolicy.online`: ``OnlineDPOModule``: sample, score and pair in every training step.

Iterative DPO (``lightning-dpo iterate``) chains generate, fit and evaluate in ``commands/iterate.py``.
"""

from lightning_dpo.onpolicy.generate import generate_pairs
from lightning_dpo.onpolicy.online import OnlineDPOModule
from lightning_dpo.onpolicy.pairing import Pair, PairCounts, PairSettings, pair_group, pair_groups, rank_group
from lightning_dpo.onpolicy.sampling import SampleGroup, sample_groups
from lightning_dpo.onpolicy.scoring import Scorer, ScoringError, ScoringSettings

__all__ = [
    "OnlineDPOModule",
    "Pair",
    "PairCounts",
    "PairSettings",
    "SampleGroup",
    "Scorer",
    "ScoringError",
    "ScoringSettings",
    "generate_pairs",
    "pair_group",
    "pair_groups",
    "rank_group",
    "sample_groups",
]
