"""Per-pair statistics behind the logged metrics, and torchmetrics that reduce them across devices.

Names and definitions follow TRL's DPOTrainer: ``rewards/*`` are β·log-ratios (detached), an accuracy
counts pairs whose chosen reward is strictly larger (ties count 0, so accuracy is 0 while the policy
equals the reference), ``logps/*`` are summed completion log-probs, and ``logits/*`` are the mean
vocabulary logit over all completion tokens (token-weighted). From the policy's head, when it computed
them: ``entropy``, the mean next-token entropy (nats) over chosen and rejected completion tokens, and
``mean_token_accuracy``, the share of chosen completion tokens that are the policy's top-1 prediction.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torchmetrics import MeanMetric

from lightning_dpo.logps import SequenceLogps
from lightning_dpo.losses import PreferenceLossOutput

METRIC_NAMES = (
    "loss",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "rewards/accuracies",
    "logps/chosen",
    "logps/rejected",
    "logits/chosen",
    "logits/rejected",
    "entropy",
    "mean_token_accuracy",
)


class Stat(NamedTuple):
    """A metric's per-pair values ``(B,)`` and their weights ``(B,)`` for the mean."""

    values: Tensor
    weights: Tensor


def pair_statistics(out: PreferenceLossOutput, chosen: SequenceLogps, rejected: SequenceLogps) -> dict[str, Stat]:
    """Every metric of ``METRIC_NAMES`` as per-pair values and weights, all detached; plus ``nll_loss`` when
    the loss computed it (weighted by chosen tokens, so that means over batches stay token means)."""
    ones = torch.ones_like(out.chosen_rewards)
    margins = out.chosen_rewards - out.rejected_rewards
    extra = {}
    if chosen.entropy_sum is not None and rejected.entropy_sum is not None:
        tokens = (chosen.num_tokens + rejected.num_tokens).to(ones.dtype)
        entropy = (chosen.entropy_sum + rejected.entropy_sum).to(ones.dtype)
        extra["entropy"] = Stat(entropy / tokens.clamp(min=1), tokens)  # token-weighted over both completions
        chosen_tokens = chosen.num_tokens.to(ones.dtype)
        extra["mean_token_accuracy"] = Stat(
            chosen.top1_count.to(ones.dtype) / chosen_tokens.clamp(min=1), chosen_tokens
        )
    if out.aux_loss is not None:
        extra["aux_loss"] = Stat(out.aux_loss.expand_as(ones), ones)
    if out.nll_loss is not None:
        extra["nll_loss"] = Stat(out.nll_loss.expand_as(ones), chosen.num_tokens.to(ones.dtype))
    return {
        **extra,
        "loss": Stat(out.losses.detach(), ones),
        "rewards/chosen": Stat(out.chosen_rewards, ones),
        "rewards/rejected": Stat(out.rejected_rewards, ones),
        "rewards/margins": Stat(margins, ones),
        "rewards/accuracies": Stat((margins > 0).to(ones.dtype), ones),
        "logps/chosen": Stat(chosen.logps.detach(), ones),
        "logps/rejected": Stat(rejected.logps.detach(), ones),
        # Token-weighted: Σ logits_sum / Σ num_tokens over the batch.
        "logits/chosen": _per_token(chosen),
        "logits/rejected": _per_token(rejected),
    }


def _per_token(seq: SequenceLogps) -> Stat:
    tokens = seq.num_tokens.to(seq.logits_sum.dtype)
    return Stat(seq.logits_sum / tokens.clamp(min=1), tokens)


def weighted_mean(stat: Stat) -> Tensor:
    return (stat.values * stat.weights).sum() / stat.weights.sum().clamp(min=torch.finfo(stat.values.dtype).tiny)


OPTIONAL_METRIC_NAMES = ("nll_loss", "aux_loss")
"""Metrics that only some runs compute: the chosen NLL (``sft``, ``orpo``, RPO) and a MoE router's loss."""


class PreferenceMetrics(nn.Module):
    """One ``MeanMetric`` per metric name, for epoch-level (validation/test) logging; a name the step's
    statistics do not hold (an optional metric) is neither updated nor logged.

    ``MeanMetric`` accumulates weighted sums and reduces them across processes at ``compute()``, so
    ``val/*`` values are exact over the whole split under DDP, not a mean of per-rank means.
    """

    def __init__(self, names: tuple[str, ...] = METRIC_NAMES + OPTIONAL_METRIC_NAMES) -> None:
        super().__init__()
        # nn.ModuleDict keys cannot contain '.', and '/' reads badly in state dicts: map to '__'.
        self.means = nn.ModuleDict({self._key(name): MeanMetric() for name in names})
        self.names = names

    @staticmethod
    def _key(name: str) -> str:
        return name.replace("/", "__")

    def update(self, stats: dict[str, Stat]) -> None:
        for name in self.names:
            if name in stats:
                stat = stats[name]
                self.means[self._key(name)].update(stat.values.float(), stat.weights.float())

    def items(self, stats: dict[str, Stat]):
        """(name, MeanMetric) of the metrics ``stats`` holds, to pass metric objects to ``LightningModule.log``."""
        return ((name, self.means[self._key(name)]) for name in self.names if name in stats)


RANKING_METRIC_NAMES = METRIC_NAMES + ("rewards/ranking_accuracy", "rewards/spread")
"""Rankings: the pair metrics of the best (``chosen``) against the worst (``rejected``) completion, and
``rewards/ranking_accuracy``, the share of adjacent completions (best first, ties skipped) whose rewards are
in the data's order, and ``rewards/spread``, the largest minus the smallest reward of a prompt's K."""

UNPAIRED_METRIC_NAMES = (
    "loss",
    "kl",
    "rewards/chosen",
    "rewards/rejected",
    "rewards/margins",
    "logps/chosen",
    "logps/rejected",
    "logits/chosen",
    "logits/rejected",
    "entropy",
)
"""Unpaired (KTO), TRL's KTOTrainer names: ``chosen`` means desirable and ``rejected`` undesirable; ``kl`` is
the KL reference point; ``rewards/margins`` the mean desirable minus the mean undesirable reward."""

METRICS_BY_LAYOUT = {"pairs": METRIC_NAMES, "rankings": RANKING_METRIC_NAMES, "unpaired": UNPAIRED_METRIC_NAMES}


def ranking_statistics(out: Any, columns: list[SequenceLogps], scores: Tensor) -> dict[str, Stat]:
    """The statistics of ``RANKING_METRIC_NAMES`` for a rankings loss output (``losses`` (B,), ``rewards``
    (B, K)) and the K columns of sequence sums, best first."""
    rewards = out.rewards  # (B, K)
    pair = PreferenceLossOutput(out.losses, rewards[:, 0], rewards[:, -1])
    stats = pair_statistics(pair, columns[0], columns[-1])
    ordered = scores[:, :-1] > scores[:, 1:]  # (B, K-1) adjacent pairs with a strict preference
    right = ordered & (rewards[:, :-1] > rewards[:, 1:])
    counts = ordered.sum(-1).to(rewards.dtype)
    stats["rewards/ranking_accuracy"] = Stat(right.sum(-1).to(rewards.dtype) / counts.clamp(min=1), counts)
    spread = rewards.max(-1).values - rewards.min(-1).values
    stats["rewards/spread"] = Stat(spread, torch.ones_like(spread))
    return stats


def unpaired_statistics(out: Any, examples: SequenceLogps, desirable: Tensor) -> dict[str, Stat]:
    """The statistics of ``UNPAIRED_METRIC_NAMES`` for an unpaired loss output (``losses``, ``rewards`` (B,),
    ``kl``) and the examples' sequence sums; as TRL's: means over the desirable (``chosen``) or undesirable
    (``rejected``) examples, ``logits/*`` and ``entropy`` token-weighted."""
    good = desirable.to(out.rewards.dtype)
    bad = 1.0 - good
    ones = torch.ones_like(good)
    n_good, n_bad = good.sum(), bad.sum()
    both = ((n_good > 0) & (n_bad > 0)).to(good.dtype)
    # Σ_i v_i / B = mean(desirable rewards) − mean(undesirable rewards), when the batch has both.
    margin = out.rewards * (good / n_good.clamp(min=1) - bad / n_bad.clamp(min=1)) * good.numel()
    tokens = examples.num_tokens.to(good.dtype)
    logits = examples.logits_sum.to(good.dtype) / tokens.clamp(min=1)
    stats = {
        "loss": Stat(out.losses.detach(), ones),
        "kl": Stat(out.kl.expand_as(ones), ones),
        "rewards/chosen": Stat(out.rewards, good),
        "rewards/rejected": Stat(out.rewards, bad),
        "rewards/margins": Stat(margin, ones * both),
        "logps/chosen": Stat(examples.logps.detach(), good),
        "logps/rejected": Stat(examples.logps.detach(), bad),
        "logits/chosen": Stat(logits, tokens * good),
        "logits/rejected": Stat(logits, tokens * bad),
    }
    if examples.entropy_sum is not None:
        stats["entropy"] = Stat(examples.entropy_sum.to(good.dtype) / tokens.clamp(min=1), tokens)
    return stats
