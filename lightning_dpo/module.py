"""``DPOModule``: the trainable policy, the reference strategy and the preference loss, as a LightningModule.

Lightning owns device placement, precision, the distributed strategy, accumulation, clipping,
checkpoints and loggers; this module owns only the DPO step. Its settings come in three groups, each
defined once beside the code that reads it: :class:`~lightning_dpo.losses.LossSettings` (``model.loss``),
:class:`~lightning_dpo.reference.ReferenceSettings` (``model.reference``) and
:class:`~lightning_dpo.logps.LogpsOptions` (``model.logps``).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from typing import Any, Literal

import torch
from torch import Tensor, nn

from lightning_dpo.embedded import DEFAULT_MODEL
from lightning_dpo.logps import LogpsOptions, SequenceLogps, completion_logps
from lightning_dpo.losses import LossSettings, PreferenceLossOutput, preference_loss
from lightning_dpo.metrics import PreferenceMetrics, Stat, pair_statistics, weighted_mean
from lightning_dpo.models import (
    SequenceTooLong,
    apply_lora,
    enable_gradient_checkpointing,
    load_causal_lm,
    max_positions,
    vocab_size,
)
from lightning_dpo.models import disable_dropout as _disable_dropout
from lightning_dpo.namespace import pl, submodule
from lightning_dpo.nonfinite import NonFiniteGuard, NonFiniteSettings
from lightning_dpo.ops.moe import RouterSums, load_balancing_loss, moe_routing
from lightning_dpo.optim import LinearWarmup, OptimizerInBackward, PaperRMSprop, check_in_backward
from lightning_dpo.reference import Reference, ReferenceSettings, make_reference
from lightning_dpo.settings import as_dict, as_settings, refuse_renamed
from lightning_dpo.sharding import check_deepspeed_strategy, fully_shard_model, hf_deepspeed_zero3

_cli = submodule("cli")
OptimizerCallable, LRSchedulerCallable = _cli.OptimizerCallable, _cli.LRSchedulerCallable

Stage = Literal["train", "val", "test"]

PROGRESS_BAR = ("loss", "rewards/margins", "rewards/accuracies")
"""Metrics shown in the progress bar, for training and evaluation alike."""

RENAMED_ARGUMENTS = {
    **{
        name: f"loss.{name}"
        for name in (
            "beta",
            "label_smoothing",
            "discopop_tau",
            "simpo_gamma",
            "ld_alpha",
            "use_weighting",
            "f_divergence_type",
            "f_alpha_divergence_coef",
            "rpo_alpha",
        )
    },
    "loss_type": "loss.type",
    "loss_weights": "loss.weights",
    "reference_mode": "reference.mode",
    "ref_model_name_or_path": "reference.model_name_or_path",
    "sync_ref_model": "reference.sync",
    "ref_model_mixup_alpha": "reference.mixup_alpha",
    "ref_model_sync_steps": "reference.sync_steps",
    "reference_cache_dir": "reference.cache_dir",
    "precompute_batch_size": "reference.precompute_batch_size",
    "fused_logps": "logps.fused_head",
    "logps_chunk_size": "logps.chunk_size",
    "padding_free": "logps.padding_free",
    "share_prompt": "logps.share_prompt",
}
"""Arguments of lightning_dpo 0.1 that moved into a settings group: old name -> new place."""


class DPOModule(pl.LightningModule):
    """Direct Preference Optimization (Rafailov et al. 2023) of a Hugging Face causal LM.

    Args:
        model_name_or_path: The policy: a Hugging Face id, a local directory, or ``embedded:<name>``.
            The default is the bundled tiny SFT model.
        loss: The preference loss, β and the loss's other hyperparameters (:class:`LossSettings`).
        reference: Where reference log-probs come from: mode, a separate reference model, TR-DPO, the
            precomputed cache (:class:`ReferenceSettings`).
        logps: How log-probs are computed: the fused LM head, packing, prompt sharing (:class:`LogpsOptions`).
        nonfinite: What a training step does when a log-prob, the loss or a gradient is NaN or infinite: stop
            with an error naming the step and the pairs, or skip the step (:class:`NonFiniteSettings`).
        lora: Train a LoRA adapter instead of all weights: ``peft.LoraConfig`` keys, e.g.
            ``{r: 16, lora_alpha: 32, lora_dropout: 0.0, target_modules: all-linear}`` (needs ``peft``).
        quantization: Load the base in k-bit for QLoRA: ``transformers.BitsAndBytesConfig`` keys, e.g.
            ``{load_in_4bit: true, bnb_4bit_quant_type: nf4}`` (needs a GPU and ``bitsandbytes``).
        disable_dropout: Zero all dropout in policy and reference (TRL's default), so that a policy equal
            to its reference gives rewards of exactly 0.
        dtype: Weight dtype at load: ``None`` (float32), ``auto`` (the checkpoint's), ``bfloat16``, ...
        attn_implementation: Passed to ``from_pretrained`` (``sdpa``, ``eager``, ``flash_attention_2``).
        trust_remote_code: Passed to ``from_pretrained``.
        gradient_checkpointing: Recompute the policy's activations in backward instead of storing them (less
            memory, about a third more compute). The reference never checkpoints: its pass runs without grad.
        compile: ``torch.compile`` the policy: ``true`` for the defaults, or ``torch.compile``'s keyword arguments
            (``{mode: max-autotune, dynamic: true}``). Applied after sharding.
        optimizer: Builds the optimizer from the policy's trainable parameters. Default: the paper's
            RMSprop at learning rate 1e-6.
        lr_scheduler: Builds a per-step LR scheduler from the optimizer, or ``None``. Default: the paper's
            linear warmup over 150 steps.
        optimizer_in_backward: Apply each parameter's optimizer step inside backward, as soon as its gradient
            is complete, and free the gradient (torchtune's ``optimizer_in_bwd``): the model's gradients never
            all exist at once. The same updates bit for bit; one device only, and refused with gradient
            clipping, gradient accumulation and fp16 (``optim.OptimizerInBackward``).
    """

    @refuse_renamed(RENAMED_ARGUMENTS, "DPOModule")
    def __init__(
        self,
        model_name_or_path: str = DEFAULT_MODEL,
        loss: LossSettings = LossSettings(),
        reference: ReferenceSettings = ReferenceSettings(),
        logps: LogpsOptions = LogpsOptions(),
        nonfinite: NonFiniteSettings = NonFiniteSettings(),
        lora: dict[str, Any] | None = None,
        quantization: dict[str, Any] | None = None,
        disable_dropout: bool = True,
        dtype: str | None = None,
        attn_implementation: str | None = None,
        trust_remote_code: bool = False,
        gradient_checkpointing: bool = False,
        compile: bool | dict[str, Any] = False,
        optimizer: OptimizerCallable = PaperRMSprop,
        lr_scheduler: LRSchedulerCallable | None = LinearWarmup,
        optimizer_in_backward: bool = False,
    ) -> None:
        super().__init__()
        self.loss_settings = as_settings(LossSettings, loss, "DPOModule(loss=...)")
        self.reference_settings = as_settings(ReferenceSettings, reference, "DPOModule(reference=...)")
        self.logps_options = as_settings(LogpsOptions, logps, "DPOModule(logps=...)")
        self.nonfinite_guard = NonFiniteGuard(as_settings(NonFiniteSettings, nonfinite, "DPOModule(nonfinite=...)"))
        # Only primitives go into checkpoints (they load with weights_only=True): the groups as plain dicts.
        # The injected callables stay out; the CLI's saved config.yaml keeps them.
        groups = (self.loss_settings, self.reference_settings, self.logps_options, self.nonfinite_guard.settings)
        loss, reference, logps, nonfinite = (as_dict(g) for g in groups)
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler

        self.policy: nn.Module | None = None
        self.reference: Reference = make_reference(
            self.reference_settings, self.loss_settings, self._load, model_name_or_path
        )
        self._last_sync_step = -1
        self._num_tokens: Tensor | int = 0  # training tokens over all ranks (TRL's num_tokens); in checkpoints
        self.val_metrics = PreferenceMetrics()
        self.test_metrics = PreferenceMetrics()
        self._router: tuple[int, int] | None = None  # (experts, top-k) of a MoE policy whose router loss is added
        self._router_coef = 0.0
        # The reference's weights can be rebuilt from the model source: keep them out of checkpoints.
        self.register_state_dict_post_hook(_drop_rebuildable_state)
        self.register_load_state_dict_post_hook(_ignore_missing_rebuildable_state)

    def _load(self, name_or_path: str) -> nn.Module:
        model = load_causal_lm(
            name_or_path,
            dtype=self.hparams.dtype,
            attn_implementation=self.hparams.attn_implementation,
            trust_remote_code=self.hparams.trust_remote_code,
            quantization=self.hparams.quantization,
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
        mesh = self._data_parallel_mesh()  # checked before any weights load
        strategy = self._trainer.strategy if self._trainer is not None else None
        with hf_deepspeed_zero3(strategy):  # ZeRO-3: load straight into partitions (no-op otherwise)
            policy = self._load(self.hparams.model_name_or_path)
            if self.hparams.lora is not None:
                policy = apply_lora(policy, dict(self.hparams.lora))
            policy.train()  # from_pretrained returns eval mode; the trainer keeps modules' modes as they are
            self.policy = policy
            self._router, self._router_coef = _router_loss(policy, self.loss_settings.router_aux_loss_coef)
            self.reference.prepare(self.policy)  # frozen and in eval mode from here on
        if self.hparams.gradient_checkpointing:
            # After prepare(), so that a frozen copy does not inherit it; the no-grad reference pass (under
            # ``adapter`` the same network) runs plain, as transformers skips checkpointing without grad.
            enable_gradient_checkpointing(self.policy)
        if mesh is not None:
            # FSDP2 (ModelParallelStrategy): reference and policy are sharded separately, so no unit holds
            # both trainable and frozen weights; the reference is already frozen and in eval mode.
            self.reference.shard(lambda model: fully_shard_model(model, mesh))
            fully_shard_model(self.policy, mesh)
        if self.hparams.compile:
            self.policy.compile(**(self.hparams.compile if isinstance(self.hparams.compile, dict) else {}))

    def _data_parallel_mesh(self) -> Any:
        """The FSDP2 mesh when ``ModelParallelStrategy`` set one (``self.device_mesh``), else ``None``."""
        mesh = self.device_mesh
        if mesh is None:
            return None
        if "tensor_parallel" in (mesh.mesh_dim_names or ()) and mesh["tensor_parallel"].size() > 1:
            raise ValueError(
                f"ModelParallelStrategy(tensor_parallel_size={mesh['tensor_parallel'].size()}): lightning_dpo shards "
                "with FSDP2 only; set trainer.strategy.init_args.tensor_parallel_size: 1 and data_parallel_size to "
                "the number of devices (configs/fsdp2.yaml)"
            )
        return mesh["data_parallel"]

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Policy logits, (N, T, V)."""
        return self.policy(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits

    # -- steps ---------------------------------------------------------------------------------------

    def dpo_step(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Stat]]:
        """One DPO step over a concatenated batch (chosen rows first, then rejected rows).

        Returns the mean loss and the per-pair statistics behind every metric.
        """
        loss, options = self.loss_settings, self.logps_options
        policy = completion_logps(
            self.policy,
            batch,
            options=options,
            ld_alpha=loss.ld_alpha,
            with_wpo=loss.use_weighting,
            with_stats=True,
            router=self._router,
        )  # (2B,)
        reference = self.reference.logps(batch, options, ld_alpha=loss.ld_alpha)  # (2B,) or None
        out, chosen, rejected = pair_loss(policy, reference, loss)
        if self._router is not None:  # a MoE policy: its router's load-balancing loss, over the whole batch
            routed = RouterSums(policy.router_assignments, policy.router_probabilities, policy.router_rows)
            aux = load_balancing_loss(routed, num_experts=self._router[0])
            out = out._replace(losses=out.losses + self._router_coef * aux, aux_loss=aux.detach())
        if self._trainer is not None and self.trainer.training:  # decided at the optimizer step (nonfinite.py)
            ref_logps = reference.logps if reference is not None else None
            self.nonfinite_guard.observe(policy.logps, ref_logps, out.losses, batch.get("pair_index"))
        stats = pair_statistics(out, chosen, rejected)
        if policy.computed_tokens is not None:  # a packed batch: what packing saved against padding
            stats["tokens_saved"] = _tokens_saved(policy.computed_tokens, batch["input_ids"].shape[1])
        return out.losses.mean(), stats

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        loss, stats = self.dpo_step(batch)
        batch_size = stats["loss"].values.shape[0]
        # Tensors, not floats: Lightning reduces them without a host sync per metric.
        values = {
            "loss": loss.detach(),
            **{name: weighted_mean(stat) for name, stat in stats.items() if name != "loss"},
        }
        for name, value in values.items():
            self.log(
                f"train/{name}",
                value,
                on_step=True,
                on_epoch=False,
                batch_size=batch_size,
                prog_bar=name in PROGRESS_BAR,
            )
        if (lr := self._learning_rate()) is not None:  # TRL's `learning_rate`; no LearningRateMonitor needed
            self.log("train/learning_rate", lr, on_step=True, on_epoch=False, batch_size=batch_size)
        self.log("train/num_tokens", self._count_tokens(batch), on_step=True, on_epoch=False, batch_size=batch_size)
        return {"loss": loss, "margins": stats["rewards/margins"].values}

    def _learning_rate(self) -> float | None:
        """The learning rate this step uses: the first optimizer's first parameter group (as TRL logs it)."""
        optimizers = self.trainer.optimizers
        return float(optimizers[0].param_groups[0]["lr"]) if optimizers else None

    def _count_tokens(self, batch: dict[str, Tensor]) -> Tensor:
        """Cumulative training tokens over all ranks, counted as TRL counts them: the attention mask's ones.
        Kept on the device (int64, exact), so that counting adds no host sync to the step."""
        tokens = batch["attention_mask"].sum()
        if self.trainer.world_size > 1:
            tokens = self.trainer.strategy.reduce(tokens, reduce_op="sum")
        self._num_tokens = tokens + self._num_tokens
        return self._num_tokens.float()

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self._evaluation_step(batch, "val", self.val_metrics)

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        return self._evaluation_step(batch, "test", self.test_metrics)

    def _evaluation_step(self, batch: dict[str, Tensor], stage: Stage, metrics: PreferenceMetrics):
        loss, stats = self.dpo_step(batch)
        metrics.update(stats)
        batch_size = stats["loss"].values.shape[0]
        for name, metric in metrics.items(stats):
            self.log(
                f"{stage}/{name}",
                metric,
                on_step=False,
                on_epoch=True,
                batch_size=batch_size,
                prog_bar=name in PROGRESS_BAR,
            )
        return {"loss": loss, "margins": stats["rewards/margins"].values}

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> dict[str, Tensor]:
        """Score pairs: per-pair rewards, margins and log-probs (``lightning-dpo predict``)."""
        _, stats = self.dpo_step(batch)
        return {name: stat.values for name, stat in stats.items() if name != "loss"}

    # -- optimisation --------------------------------------------------------------------------------

    def configure_optimizers(self) -> Any:
        # The reference is frozen (requires_grad=False), so only policy parameters reach the optimizer.
        params = [p for p in self.policy.parameters() if p.requires_grad]
        if self.hparams.optimizer_in_backward:
            check_in_backward(self.trainer)
            optimizer = OptimizerInBackward(params, self.optimizer_factory)
        else:
            optimizer = self.optimizer_factory(params)
        if self.lr_scheduler_factory is None:
            return optimizer
        scheduler = self.lr_scheduler_factory(optimizer)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    # -- hooks ---------------------------------------------------------------------------------------

    def setup(self, stage: str) -> None:
        strategy = self._trainer.strategy if self._trainer is not None else None
        if type(strategy).__name__ == "DeepSpeedStrategy":  # by name: deepspeed is not imported unless used
            check_deepspeed_strategy(strategy)  # the frozen reference stays out of its checkpoints
        self.nonfinite_guard.check_strategy(strategy)
        # The frozen reference is in eval mode on purpose; Lightning warns about any eval-mode module at
        # the start of fit. Silence exactly that message, and only when we hold a reference model.
        if self.reference.name != "none":
            warnings.filterwarnings(
                "ignore",
                message=re.escape("Found ") + r"\d+ module\(s\) in eval mode",
                category=submodule("utilities.warnings").PossibleUserWarning,
            )

    def on_fit_start(self) -> None:
        self._check_tokenizer_fits()
        self._check_positions_fit()
        self.reference.before_fit(self.trainer, self.policy, self.logps_options, self.loss_settings.ld_alpha)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        self.nonfinite_guard.decide(self.trainer, self, optimizer)  # raise, skip the step, or let it go

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["reference_state"] = self.reference.state_for_checkpoint()
        checkpoint["num_tokens"] = int(self._num_tokens)
        checkpoint["nonfinite_state"] = self.nonfinite_guard.state_dict()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.reference.load_checkpoint_state(checkpoint.get("reference_state", {}))
        self._num_tokens = int(checkpoint.get("num_tokens", 0))
        self.nonfinite_guard.load_state_dict(checkpoint.get("nonfinite_state", {}))

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        step = self.trainer.global_step  # optimizer steps; several batches share one under accumulation
        settings = self.reference_settings
        if settings.sync and step % settings.sync_steps == 0 and step != self._last_sync_step:
            self._last_sync_step = step
            self.reference.sync(self.policy, settings.mixup_alpha)

    def _check_positions_fit(self) -> None:
        """Refuse, before any step, pairs longer than the policy has positions for (``PreferenceDataModule``
        cuts them when it knows the model; a data module set up on its own does not)."""
        limit = max_positions(self.policy.config) if hasattr(self.policy, "config") else None
        longest = _longest_pair(self.trainer.datamodule) if self.trainer.datamodule is not None else None
        if limit is not None and longest is not None and longest > limit:
            raise SequenceTooLong(
                f"the data has pairs of {longest} tokens but the model {self.hparams.model_name_or_path!r} has "
                f"{limit} positions (max_position_embeddings): set data.max_length to {limit} or less"
            )

    def _check_tokenizer_fits(self) -> None:
        tokenizer = getattr(self.trainer.datamodule, "tokenizer", None) if self.trainer.datamodule else None
        if tokenizer is not None and len(tokenizer) > vocab_size(self.policy):
            raise ValueError(
                f"the tokenizer has {len(tokenizer)} tokens but the model {self.hparams.model_name_or_path!r} "
                f"predicts only {vocab_size(self.policy)}: use the model's own tokenizer "
                "(data.tokenizer_name_or_path) or resize the model's embeddings"
            )


def _router_loss(policy: nn.Module, coef: float | None) -> tuple[tuple[int, int] | None, float]:
    """(experts, top-k) and the weight of a MoE policy's router loss, or (None, 0) when none is added. ``coef``
    ``None``: the config's own ``router_aux_loss_coef``, as transformers trains the model."""
    routing = moe_routing(policy)
    if routing is None:
        if coef:
            raise ValueError(
                f"loss.router_aux_loss_coef is {coef} but {type(policy).__name__} is not a mixture-of-experts model "
                "with router logits: there is no router loss to weight"
            )
        return None, 0.0
    config = policy.get_base_model().config if hasattr(policy, "get_base_model") else policy.config
    coef = float(getattr(config, "router_aux_loss_coef", 0.0) if coef is None else coef)
    return (routing if coef else None), coef


def _longest_pair(datamodule: Any) -> int | None:
    longest = getattr(datamodule, "longest_pair", None)
    return longest() if longest is not None else None


def pair_loss(
    policy: SequenceLogps, reference: SequenceLogps | None, settings: LossSettings
) -> tuple[PreferenceLossOutput, SequenceLogps, SequenceLogps]:
    """The preference loss of a concatenated batch's (2B,) log-probs: (loss output, chosen, rejected)."""
    chosen, rejected = _split_pairs(policy)
    ref_chosen, ref_rejected = _split_pairs(reference) if reference is not None else (None, None)
    out = preference_loss(
        chosen.logps,
        rejected.logps,
        ref_chosen.logps if ref_chosen is not None else None,
        ref_rejected.logps if ref_rejected is not None else None,
        settings,
        chosen_lengths=chosen.num_tokens,
        rejected_lengths=rejected.num_tokens,
        chosen_nll_logps=chosen.raw_logps,
        wpo_log_weights=(chosen.wpo_log_weights, rejected.wpo_log_weights) if settings.use_weighting else None,
    )
    return out, chosen, rejected


def _tokens_saved(computed_tokens: Tensor, width: int) -> Stat:
    """Per pair, the share of its two padded rows (2 × T slots) that the packed model did not compute."""
    chosen, rejected = computed_tokens.chunk(2)  # (B,), (B,)
    saved = 1.0 - (chosen + rejected).float() / (2 * width)
    return Stat(saved, torch.ones_like(saved))


def _split_pairs(seq: SequenceLogps) -> tuple[SequenceLogps, SequenceLogps]:
    """(2B,) tensors -> chosen (first B) and rejected (last B); absent (None) fields stay absent."""
    halves = [t.chunk(2) if t is not None else (None, None) for t in seq]
    return SequenceLogps(*(h[0] for h in halves)), SequenceLogps(*(h[1] for h in halves))


def _rebuildable(module: DPOModule) -> Callable[[str], bool]:
    """Which state-dict keys ``configure_model`` rebuilds from the model source, so that checkpoints need not
    hold them: the reference (unless TR-DPO moved it), and frozen policy weights such as a LoRA base."""
    frozen = set()
    if module.policy is not None:
        frozen = {f"policy.{n}" for n, p in module.policy.named_parameters() if not p.requires_grad}
        frozen = {k for k in frozen if not module.reference.keeps(k)}

    def rebuildable(key: str) -> bool:
        if key.startswith("reference."):
            return not module.reference.in_checkpoint
        return key in frozen

    return rebuildable


def _drop_rebuildable_state(module: nn.Module, state_dict: dict, prefix: str, local_metadata: Any) -> None:
    rebuildable = _rebuildable(module)
    for key in [k for k in state_dict if k.startswith(prefix) and rebuildable(k[len(prefix) :])]:
        del state_dict[key]


def _ignore_missing_rebuildable_state(module: nn.Module, incompatible_keys: Any) -> None:
    rebuildable = _rebuildable(module)
    incompatible_keys.missing_keys[:] = [k for k in incompatible_keys.missing_keys if not rebuildable(k)]
