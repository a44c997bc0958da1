"""``OnlineDPOModule``: online DPO (Guo et al. 2024; TRL's ``OnlineDPOTrainer``), Lightning-native.

Every training step, for the batch of prompts from ``PromptDataModule``:

1. **Sample** ``samples_per_prompt`` (K) completions of each prompt from the current policy
   (:func:`~lightning_dpo.onpolicy.sampling.sample_groups`: eval mode, no grad, a forked RNG seeded from
   (``sampling.seed``, global step, rank), so the training's random streams are untouched; ``synced_gpus`` under
   FSDP / DeepSpeed so sharded parameters are gathered in step, as ``GenerationSamples`` does).
2. **Score** them with the reward or judge (:class:`~lightning_dpo.onpolicy.scoring.Scorer`: every value
   checked, a bad one an error naming the prompt, or with ``on_invalid: skip`` unscored and never paired).
   ``missing_eos_penalty`` is subtracted from the score of a sample that did not end with EOS (TRL's).
3. **Pair** them (:mod:`~lightning_dpo.onpolicy.pairing`; default best vs worst with ``ties: first``, which for
   K = 2 is TRL's rule ``first >= second -> first chosen``). Samples without EOS may be paired: their tokens are
   what the policy produced, and the penalty is how they lose.
4. **DPO** on those pairs: the sampled token ids exactly (no re-tokenisation), through ``DPOModule``'s own
   step, so every loss of the registry (``sigmoid``, ``ipo``, ...), every reference mode that needs no
   precomputation (``frozen``, ``adapter`` with LoRA, ``none`` for reference-free losses) and every log-prob
   fast path apply.

Logged each step (TRL's names): ``train/objective/scores`` (mean score of all samples, after the penalty),
``train/objective/scores_margin`` (chosen − rejected), ``train/objective/kl`` (mean over paired samples of
log πθ(y) − log πref(y), a KL estimate since y ~ πθ), ``train/objective/entropy`` (mean − log πθ(y)),
``train/objective/non_score_reward`` (−β·KL), ``train/objective/rlhf_reward``, ``train/val/contain_eos_token``
(the EOS rate), ``train/samples/length`` (mean completion tokens), ``train/samples/pairs`` and
``train/samples/unpaired_prompts``, plus DPOModule's ``train/loss``, ``train/rewards/*``, ``train/logps/*``.
Validation samples the validation prompts and logs ``val/objective/scores``, ``val/val/contain_eos_token``
and ``val/samples/length``.

A step whose batch (on some rank) gives no pair still runs forward and backward, with weight 0 on a
stand-in pair, so that every DDP rank takes part in the gradient all-reduce; it trains on nothing.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch
from torch import Tensor

from lightning_dpo.data.collate import PreferenceCollator
from lightning_dpo.evaluation.generation import SamplingSettings
from lightning_dpo.losses import get_loss_spec
from lightning_dpo.models import load_tokenizer
from lightning_dpo.module import DPOModule
from lightning_dpo.onpolicy.pairing import PairCounts, PairSettings, pair_group
from lightning_dpo.onpolicy.sampling import SampleGroup, check_room, context_length, derive_seed, sample_groups
from lightning_dpo.onpolicy.scoring import Scorer, ScoringSettings
from lightning_dpo.settings import as_dict, as_settings

SHARDED_STRATEGIES = ("FSDPStrategy", "DeepSpeedStrategy", "ModelParallelStrategy")


class OnlineDPOModule(DPOModule):
    """DPO on pairs sampled from the current policy at every step (see the module docstring).

    Takes every ``DPOModule`` argument (``model_name_or_path``, ``loss``, ``reference``, ``logps``, ``lora``,
    ``optimizer``, ...) and these:

    Args:
        scoring: The reward (dotted path or ``hf:<id or dir>``) or pairwise judge, and what to do with invalid
            scores (:class:`~lightning_dpo.onpolicy.scoring.ScoringSettings`).
        sampling: Generation settings (temperature 1, no top-p / top-k by default) and the base seed.
        samples_per_prompt: K completions per prompt per step (TRL: 2).
        pairs: The pair rule; default best vs worst, ties paired first-vs-second as TRL does.
        missing_eos_penalty: Subtracted from the score of every sample that did not end with EOS (TRL's
            ``missing_eos_penalty``); ``None``: no penalty.
        reward_fn: From Python: a reward callable to use instead of ``scoring.reward``'s dotted path.
    """

    def __init__(
        self,
        *args: Any,
        scoring: ScoringSettings | None = None,
        sampling: SamplingSettings = SamplingSettings(),
        samples_per_prompt: int = 2,
        pairs: PairSettings = PairSettings(ties="first"),
        missing_eos_penalty: float | None = None,
        reward_fn: Any = None,
        **kwargs: Any,
    ) -> None:
        if scoring is None:
            scoring = ScoringSettings(reward="lightning_dpo.tasks.politeness.politeness_reward")
        scoring = as_settings(ScoringSettings, scoring, "OnlineDPOModule(scoring=...)")
        sampling = as_settings(SamplingSettings, sampling, "OnlineDPOModule(sampling=...)")
        pairs = as_settings(PairSettings, pairs, "OnlineDPOModule(pairs=...)")
        if pairs.rule == "ranking":
            raise ValueError(
                "pairs.rule ranking writes rankings files (lightning-dpo generate); online DPO trains on pairs: "
                "use best_vs_worst or margin"
            )
        if samples_per_prompt < 2:
            raise ValueError(f"samples_per_prompt must be at least 2 to make a pair, got {samples_per_prompt}")
        super().__init__(*args, **kwargs)
        if self.reference.name == "precomputed":
            raise ValueError(
                "reference.mode precomputed computes reference log-probs of a fixed data set before training; "
                "online DPO samples new completions every step: use frozen, adapter (with lora) or none"
            )
        self.scoring_settings, self.sampling, self.pair_settings = scoring, sampling, pairs
        self.k, self.missing_eos_penalty = samples_per_prompt, missing_eos_penalty
        self.hparams.update(
            scoring=as_dict(scoring),
            sampling=asdict(sampling),
            pairs=asdict(pairs),
            samples_per_prompt=samples_per_prompt,
            missing_eos_penalty=missing_eos_penalty,
        )
        self.scorer = Scorer(scoring, reward=reward_fn)
        self.tokenizer: Any = None
        self.pair_counts = PairCounts()

    def configure_model(self) -> None:
        super().configure_model()
        if self.tokenizer is None:
            self.tokenizer = load_tokenizer(self.hparams.model_name_or_path)

    def on_fit_start(self) -> None:
        """Before any step: every prompt must leave room for ``max_new_tokens`` in the model's context."""
        super().on_fit_start()
        datamodule = self.trainer.datamodule
        for prompts in (getattr(datamodule, "train_prompts", None), getattr(datamodule, "val_prompts", None)):
            if prompts is not None:
                items = prompts.prompts
                check_room(
                    [len(p.ids) for p in items],
                    [p.location for p in items],
                    self.sampling.max_new_tokens,
                    context_length(self.policy),
                    self.hparams.model_name_or_path,
                )

    # -- sampling, scoring, pairing ----------------------------------------------------------------------

    def _sharded(self) -> bool:
        trainer = self._trainer
        return trainer is not None and trainer.world_size > 1 and type(trainer.strategy).__name__ in SHARDED_STRATEGIES

    def sample_and_score(self, batch: dict[str, Any], stage: str) -> list[SampleGroup]:
        """K scored samples of every prompt of the batch; the penalty applied to samples without EOS."""
        step = self.trainer.global_step if self._trainer is not None else 0
        rank = self.global_rank if self._trainer is not None else 0
        seed = derive_seed(self.sampling.seed, stage, step, rank, int(batch["prompt_index"][0]))
        groups = sample_groups(
            self.policy,
            self.tokenizer,
            batch["prompt_input_ids"],
            self.k,
            self.sampling,
            seed=seed,
            synced_gpus=self._sharded(),
        )
        scores = self.scorer.score(batch["prompt_text"], [g.texts for g in groups], batch["location"], seed=step)
        for group, group_scores in zip(groups, scores):
            if self.missing_eos_penalty is not None:
                group_scores = [
                    s - self.missing_eos_penalty if s is not None and not f else s
                    for s, f in zip(group_scores, group.finished)
                ]
            group.scores = group_scores
        return groups

    def make_pairs(self, batch: dict[str, Any], groups: list[SampleGroup]) -> tuple[list[dict[str, Any]], PairCounts]:
        """Token-id pairs (the layout ``PreferenceCollator`` takes) and the counts of what was paired."""
        pairs, counts = [], PairCounts()
        for prompt_ids, group in zip(batch["prompt_input_ids"], groups):
            usable = [bool(c) for c in group.completions]  # EOS not required: the penalty handles it
            found, group_counts = pair_group(group.scores, usable, self.pair_settings, keys=group.texts)
            counts = counts + group_counts
            for pair in found:
                pairs.append(
                    {
                        "prompt_input_ids": list(prompt_ids),
                        "chosen_input_ids": group.completions[pair.chosen],
                        "rejected_input_ids": group.completions[pair.rejected],
                        "chosen_score": float(group.scores[pair.chosen]),
                        "rejected_score": float(group.scores[pair.rejected]),
                    }
                )
        return pairs, counts

    def _collate(self, pairs: list[dict[str, Any]]) -> dict[str, Tensor]:
        batch = PreferenceCollator(self.tokenizer.pad_token_id)(pairs)
        return {k: v.to(self.device) for k, v in batch.items()}

    # -- steps ---------------------------------------------------------------------------------------------

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> dict[str, Tensor]:
        groups = self.sample_and_score(batch, "train")
        pairs, counts = self.make_pairs(batch, groups)
        self.pair_counts = self.pair_counts + counts
        weight = 1.0
        if not pairs:  # train on nothing, but take part in the all-reduce (module docstring)
            g = next(g for g in groups if sum(bool(c) for c in g.completions) >= 1)
            ids = [c for c in g.completions if c] or [[self.tokenizer.eos_token_id]]
            stand_in = {"prompt_input_ids": list(batch["prompt_input_ids"][0]), "chosen_score": 0.0}
            pairs = [{**stand_in, "chosen_input_ids": ids[0], "rejected_input_ids": ids[-1], "rejected_score": 0.0}]
            weight = 0.0
        dpo_batch = self._collate(pairs)
        out = super().training_step(dpo_batch, batch_idx)
        self._log_samples(groups, pairs, counts, out, weight)
        return {**out, "loss": out["loss"] * weight}

    def _log_samples(
        self, groups: list[SampleGroup], pairs: list[dict[str, Any]], counts: PairCounts, out: Any, weight: float
    ) -> None:
        scores = [s for g in groups for s in g.scores if s is not None]
        finished = [f for g in groups for f in g.finished]
        lengths = [len(c) for g in groups for c in g.completions]
        values: dict[str, float] = {
            "objective/scores": sum(scores) / max(len(scores), 1),
            "val/contain_eos_token": sum(finished) / len(finished),
            "samples/length": sum(lengths) / len(lengths),
            "samples/pairs": float(counts.pairs),
            "samples/unpaired_prompts": float(counts.groups - counts.grouped),
        }
        if weight:
            values["objective/scores_margin"] = sum(p["chosen_score"] - p["rejected_score"] for p in pairs) / len(pairs)
        spec = get_loss_spec(self.loss_settings.type)
        stats = self._last_stats
        if stats is not None and weight:
            logps = torch.cat([stats["logps/chosen"].values, stats["logps/rejected"].values]).float()
            values["objective/entropy"] = float(-logps.mean())
            if spec.uses_reference and not spec.rewards_per_token and self.reference.name != "none":
                beta = self.loss_settings.beta
                ratios = torch.cat([stats["rewards/chosen"].values, stats["rewards/rejected"].values]).float() / beta
                kl = float(ratios.mean())
                values["objective/kl"] = kl
                values["objective/non_score_reward"] = -beta * kl
                values["objective/rlhf_reward"] = values["objective/scores"] - beta * kl
        sync = self.trainer.world_size > 1  # the mean over ranks, as TRL gathers them
        for name, value in values.items():
            self.log(f"train/{name}", value, on_step=True, on_epoch=False, batch_size=len(groups), sync_dist=sync)

    def dpo_step(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Any]]:
        loss, stats = super().dpo_step(batch)
        self._last_stats = stats
        return loss, stats

    _last_stats: dict[str, Any] | None = None

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        groups = self.sample_and_score(batch, "val")
        scores = [s for g in groups for s in g.scores if s is not None]
        finished = [f for g in groups for f in g.finished]
        lengths = [len(c) for g in groups for c in g.completions]
        n = len(groups)
        self.log("val/objective/scores", sum(scores) / max(len(scores), 1), on_epoch=True, batch_size=n, sync_dist=True)
        self.log(
            "val/val/contain_eos_token", sum(finished) / len(finished), on_epoch=True, batch_size=n, sync_dist=True
        )
        self.log("val/samples/length", sum(lengths) / len(lengths), on_epoch=True, batch_size=n, sync_dist=True)

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self.validation_step(batch, batch_idx)
