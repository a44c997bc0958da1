"""``DPOModule``: the trainable policy, the reference strategy and the preference loss, as a LightningModule.

Lightning owns device placement, precision, the distributed strategy, accumulation, clipping,
checkpoints and loggers; this module owns only the DPO step.
"""

from __future__ import annotations

import re
import warnings
from functools import partial
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from pytorch_lightning.utilities.warnings import PossibleUserWarning
from torch import Tensor, nn

from lightning_dpo.embedded import DEFAULT_MODEL
from lightning_dpo.logps import SequenceLogps, completion_logps
from lightning_dpo.losses import get_loss_spec, preference_loss
from lightning_dpo.metrics import PreferenceMetrics, Stat, pair_statistics, weighted_mean
from lightning_dpo.models import disable_dropout as _disable_dropout
from lightning_dpo.models import load_causal_lm, vocab_size
from lightning_dpo.optim import LinearWarmup, PaperRMSprop
from lightning_dpo.reference import Reference, make_reference, resolve_reference_mode

Stage = Literal["train", "val", "test"]


class DPOModule(pl.LightningModule):
    """Direct Preference Optimization (Rafailov et al. 2023) of a Hugging Face causal LM.

    Args:
        model_name_or_path: The policy: a Hugging Face id, a local directory, or ``embedded:<name>``.
            The default is the bundled tiny SFT model.
        ref_model_name_or_path: A separate reference model (same vocabulary). ``None``: a frozen copy of the
            policy as loaded.
        reference_mode: Where reference log-probs come from: ``auto`` (``frozen`` for losses that use a
            reference, ``none`` for reference-free ones), ``frozen``, or ``none`` (reference-free).
        loss_type: A loss registered in ``lightning_dpo.losses.LOSSES``: ``sigmoid`` (DPO), ``hinge``, ``ipo``.
        beta: β, the strength of the implicit KL penalty to the reference (the paper uses 0.1).
        label_smoothing: ε of conservative DPO: the assumed probability that a pair's label is flipped.
        disable_dropout: Zero all dropout in policy and reference (TRL's default), so that a policy equal
            to its reference gives rewards of exactly 0.
        dtype: Weight dtype at load: ``None`` (float32), ``auto`` (the checkpoint's), ``bfloat16``, ...
        attn_implementation: Passed to ``from_pretrained`` (``sdpa``, ``eager``, ``flash_attention_2``).
        trust_remote_code: Passed to ``from_pretrained``.
        optimizer: Builds the optimizer from the policy's trainable parameters. Default: the paper's
            RMSprop at learning rate 1e-6.
        lr_scheduler: Builds a per-step LR scheduler from the optimizer, or ``None``. Default: the paper's
            linear warmup over 150 steps.
    """

    def __init__(
        self,
        model_name_or_path: str = DEFAULT_MODEL,
        ref_model_name_or_path: str | None = None,
        reference_mode: Literal["auto", "frozen", "none"] = "auto",
        loss_type: str = "sigmoid",
        beta: float = 0.1,
        label_smoothing: float = 0.0,
        disable_dropout: bool = True,
        dtype: str | None = None,
        attn_implementation: str | None = None,
        trust_remote_code: bool = False,
        optimizer: OptimizerCallable = PaperRMSprop,
        lr_scheduler: LRSchedulerCallable | None = LinearWarmup,
    ) -> None:
        super().__init__()
        # Only primitives go into checkpoints (loadable with weights_only=True); the CLI's saved
        # config.yaml keeps the injected callables.
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        self.loss_spec = get_loss_spec(loss_type)
        self.resolved_reference_mode = resolve_reference_mode(reference_mode, self.loss_spec, loss_type)

        self.policy: nn.Module | None = None
        load_separate = partial(self._load, ref_model_name_or_path) if ref_model_name_or_path else None
        self.reference: Reference = make_reference(
            self.resolved_reference_mode, load_separate, ref_model_name_or_path
        )
        self.val_metrics = PreferenceMetrics()
        self.test_metrics = PreferenceMetrics()
        # The reference's weights can be rebuilt from the model source: keep them out of checkpoints.
        self.register_state_dict_post_hook(_drop_reference_state)
        self.register_load_state_dict_post_hook(_ignore_missing_reference_state)

    def _load(self, name_or_path: str) -> nn.Module:
        model = load_causal_lm(
            name_or_path,
            dtype=self.hparams.dtype,
            attn_implementation=self.hparams.attn_implementation,
            trust_remote_code=self.hparams.trust_remote_code,
        )
        if self.hparams.disable_dropout:
            _disable_dropout(model)
        return model

    def configure_model(self) -> None:
        """Load the policy and build the reference. Idempotent: Lightning may call it more than once
        (``fit`` after ``validate``, ``load_from_checkpoint``), and sharded strategies call it inside
        their initialisation context."""
        if self.policy is not None:
            return
        policy = self._load(self.hparams.model_name_or_path)
        policy.train()  # from_pretrained returns eval mode; the trainer keeps modules' modes as they are
        self.policy = policy
        self.reference.build(self.policy)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Policy logits, (N, T, V)."""
        return self.policy(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

    # -- steps ---------------------------------------------------------------------------------------

    def dpo_step(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Stat]]:
        """One DPO step over a concatenated batch (chosen rows first, then rejected rows).

        Returns the mean loss and the per-pair statistics behind every metric.
        """
        policy = completion_logps(self.policy, batch)  # (2B,) sums
        reference = self.reference.logps(batch)  # (2B,) or None
        chosen, rejected = _split_pairs(policy)
        ref_chosen, ref_rejected = _split_pairs(reference) if reference is not None else (None, None)
        out = preference_loss(
            chosen.logps,
            rejected.logps,
            ref_chosen.logps if ref_chosen is not None else None,
            ref_rejected.logps if ref_rejected is not None else None,
            loss_type=self.hparams.loss_type,
            beta=self.hparams.beta,
            label_smoothing=self.hparams.label_smoothing,
            chosen_lengths=chosen.num_tokens,
            rejected_lengths=rejected.num_tokens,
        )
        return out.losses.mean(), pair_statistics(out, chosen, rejected)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        loss, stats = self.dpo_step(batch)
        batch_size = stats["loss"].values.shape[0]
        # Tensors, not floats: Lightning reduces them without a host sync per metric.
        self.log("train/loss", loss.detach(), on_step=True, prog_bar=True, batch_size=batch_size)
        self.log_dict(
            {f"train/{name}": weighted_mean(stat) for name, stat in stats.items() if name != "loss"},
            on_step=True,
            on_epoch=False,
            batch_size=batch_size,
        )
        return {"loss": loss, "margins": stats["rewards/margins"].values}

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self._evaluation_step(batch, "val", self.val_metrics)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self._evaluation_step(batch, "test", self.test_metrics)

    def _evaluation_step(self, batch: dict[str, Tensor], stage: Stage, metrics: PreferenceMetrics):
        loss, stats = self.dpo_step(batch)
        metrics.update(stats)
        batch_size = stats["loss"].values.shape[0]
        for name, metric in metrics.items():
            self.log(f"{stage}/{name}", metric, on_step=False, on_epoch=True, batch_size=batch_size,
                     prog_bar=name in ("loss", "rewards/accuracies"))
        return {"loss": loss, "margins": stats["rewards/margins"].values}

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        """Score pairs: per-pair rewards, margins and log-probs (``lightning-dpo predict``)."""
        _, stats = self.dpo_step(batch)
        return {name: stat.values for name, stat in stats.items() if name != "loss"}

    # -- optimisation --------------------------------------------------------------------------------

    def configure_optimizers(self) -> Any:
        # The reference is frozen (requires_grad=False), so only policy parameters reach the optimizer.
        params = [p for p in self.policy.parameters() if p.requires_grad]
        optimizer = self.optimizer_factory(params)
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- hooks ---------------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        # The frozen reference is in eval mode on purpose; Lightning warns about any eval-mode module at
        # the start of fit. Silence exactly that message, and only when we hold a reference model.
        if self.resolved_reference_mode != "none":
            warnings.filterwarnings(
                "ignore", message=re.escape("Found ") + r"\d+ module\(s\) in eval mode", category=PossibleUserWarning
            )

    def on_fit_start(self) -> None:
        self._check_tokenizer_fits()

    def _check_tokenizer_fits(self) -> None:
        tokenizer = getattr(self.trainer.datamodule, "tokenizer", None) if self.trainer.datamodule else None
        if tokenizer is not None and len(tokenizer) > vocab_size(self.policy):
            raise ValueError(
                f"the tokenizer has {len(tokenizer)} tokens but the model {self.hparams.model_name_or_path!r} "
                f"predicts only {vocab_size(self.policy)}: use the model's own tokenizer "
                "(data.tokenizer_name_or_path) or resize the model's embeddings"
            )


def _split_pairs(seq: SequenceLogps) -> tuple[SequenceLogps, SequenceLogps]:
    """(2B,) tensors -> chosen (first B) and rejected (last B)."""
    halves = [t.chunk(2) for t in seq]
    return SequenceLogps(*(h[0] for h in halves)), SequenceLogps(*(h[1] for h in halves))


def _drop_reference_state(module: nn.Module, state_dict: dict, prefix: str, local_metadata: Any) -> None:
    if module.reference.in_checkpoint:
        return
    for key in [k for k in state_dict if k.startswith(prefix + "reference.")]:
        del state_dict[key]


def _ignore_missing_reference_state(module: nn.Module, incompatible_keys: Any) -> None:
    if module.reference.in_checkpoint:
        return
    missing = incompatible_keys.missing_keys
    missing[:] = [k for k in missing if not k.startswith("reference.")]
