"""``DPOModule``: the trainable policy, the reference strategy and the preference loss, as a LightningModule.

Lightning owns device placement, precision, the distributed strategy, accumulation, clipping,
checkpoints and loggers; this module owns only the DPO step.
"""

from __future__ import annotations

import re
import warnings
from typing import Any, Callable, Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.cli import LRSchedulerCallable, OptimizerCallable
from pytorch_lightning.utilities.warnings import PossibleUserWarning
from torch import Tensor, nn

from lightning_dpo.embedded import DEFAULT_MODEL
from lightning_dpo.logps import SequenceLogps, completion_logps, logps_options
from lightning_dpo.losses import loss_specs, preference_loss
from lightning_dpo.metrics import METRIC_NAMES, PreferenceMetrics, Stat, pair_statistics, weighted_mean
from lightning_dpo.models import disable_dropout as _disable_dropout
from lightning_dpo.models import enable_gradient_checkpointing, load_causal_lm, vocab_size
from lightning_dpo.optim import LinearWarmup, PaperRMSprop
from lightning_dpo.adapters import apply_lora
from lightning_dpo.data.report import flatten_report
from lightning_dpo.reference import Reference, make_reference, resolve_reference_mode
from lightning_dpo.sharding import check_deepspeed_strategy, fully_shard_model, hf_deepspeed_zero3

Stage = Literal["train", "val", "test"]


class DPOModule(pl.LightningModule):
    """Direct Preference Optimization (Rafailov et al. 2023) of a Hugging Face causal LM.

    Args:
        model_name_or_path: The policy: a Hugging Face id, a local directory, or ``embedded:<name>``.
            The default is the bundled tiny SFT model.
        ref_model_name_or_path: A separate reference model (same vocabulary). ``None``: a frozen copy of the
            policy as loaded.
        reference_mode: Where reference log-probs come from: ``auto`` (``frozen`` for losses that use a
            reference, ``none`` for reference-free ones), ``frozen`` (a frozen copy), ``adapter`` (the LoRA
            policy with its adapter disabled; needs ``lora``), ``precomputed`` (computed once before training,
            cached on disk, no model kept), or ``none`` (reference-free).
        lora: Train a LoRA adapter instead of all weights: ``peft.LoraConfig`` keys, e.g.
            ``{r: 16, lora_alpha: 32, lora_dropout: 0.0, target_modules: all-linear}`` (needs ``peft``).
        quantization: Load the base in k-bit for QLoRA: ``transformers.BitsAndBytesConfig`` keys, e.g.
            ``{load_in_4bit: true, bnb_4bit_quant_type: nf4}`` (needs a GPU and ``bitsandbytes``).
        sync_ref_model: TR-DPO: move the reference towards the policy every ``ref_model_sync_steps``.
        ref_model_mixup_alpha: TR-DPO's α: reference ← α·policy + (1 − α)·reference (1 is a hard update).
        ref_model_sync_steps: TR-DPO's period, in optimizer steps.
        reference_cache_dir: Where ``precomputed`` caches reference log-probs (default
            ``reference_logps/`` in the data cache directory).
        precompute_batch_size: Pairs per forward pass when precomputing reference log-probs.
        loss_type: A loss registered in ``lightning_dpo.losses.LOSSES`` (``sigmoid`` is DPO; see the README
            for all), an importable dotted path to a loss function, or a list of them to combine.
        loss_weights: One weight per loss type when combining (default all 1): Σ wᵢ·mean(lossᵢ), as in TRL.
        beta: β, the strength of the implicit KL penalty to the reference (the paper uses 0.1); τ for IPO,
            λ for ORPO.
        label_smoothing: ε: the assumed probability that a pair's label is flipped (cDPO, robust, EXO, AOT,
            SimPO).
        discopop_tau: τ of DiscoPOP's log-ratio modulation.
        simpo_gamma: SimPO's target reward margin γ (absolute, as in the SimPO paper).
        ld_alpha: LD-DPO: weight of completion tokens past the shorter completion of each pair (1 = DPO).
        use_weighting: WPO: weight each pair by the policy's per-token-normalised probability of both
            completions.
        f_divergence_type: f-DPO: the divergence to the reference (``reverse_kl`` is DPO).
        f_alpha_divergence_coef: α of ``alpha_divergence``.
        rpo_alpha: RPO: add α·NLL of the chosen completion to the loss.
        disable_dropout: Zero all dropout in policy and reference (TRL's default), so that a policy equal
            to its reference gives rewards of exactly 0.
        dtype: Weight dtype at load: ``None`` (float32), ``auto`` (the checkpoint's), ``bfloat16``, ...
        attn_implementation: Passed to ``from_pretrained`` (``sdpa``, ``eager``, ``flash_attention_2``).
        trust_remote_code: Passed to ``from_pretrained``.
        gradient_checkpointing: Recompute the policy's activations in backward instead of storing them (less
            memory, about a third more compute). The reference never checkpoints: its pass runs without grad.
        compile: ``torch.compile`` the policy: ``true`` for the defaults, or ``torch.compile``'s keyword arguments
            (``{mode: max-autotune, dynamic: true}``). Applied after sharding.
        fused_logps: Compute log-probs on the fast path: the LM head only at completion positions, fused
            with log-softmax and chunked, so no (tokens × vocabulary) logits are held. Models whose head
            cannot be split off fall back to full logits. ``False``: always full logits (the reference path).
        logps_chunk_size: Tokens per block of logits in the fused head (``None``: about 8M logits a block).
        padding_free: Pack each batch's sequences into one row, without padding (fast path only). ``None``:
            where it pays: on a CPU with ``sdpa`` attention (attention per sequence, no mask), and with flash
            attention.
        share_prompt: Pack each pair as prompt + chosen + rejected, so that the prompt runs through the model
            once (fast path, ``sdpa`` attention). ``None``: on a CPU with ``sdpa`` attention. Packed steps log
            ``train/tokens_saved``: the share of the padded batch's token slots the model did not compute.
        optimizer: Builds the optimizer from the policy's trainable parameters. Default: the paper's
            RMSprop at learning rate 1e-6.
        lr_scheduler: Builds a per-step LR scheduler from the optimizer, or ``None``. Default: the paper's
            linear warmup over 150 steps.
    """

    def __init__(
        self,
        model_name_or_path: str = DEFAULT_MODEL,
        ref_model_name_or_path: str | None = None,
        reference_mode: Literal["auto", "frozen", "adapter", "precomputed", "none"] = "auto",
        lora: dict[str, Any] | None = None,
        quantization: dict[str, Any] | None = None,
        sync_ref_model: bool = False,
        ref_model_mixup_alpha: float = 0.6,
        ref_model_sync_steps: int = 512,
        reference_cache_dir: str | None = None,
        precompute_batch_size: int = 8,
        loss_type: str | list[str] = "sigmoid",
        loss_weights: list[float] | None = None,
        beta: float = 0.1,
        label_smoothing: float = 0.0,
        discopop_tau: float = 0.05,
        simpo_gamma: float = 0.5,
        ld_alpha: float | None = None,
        use_weighting: bool = False,
        f_divergence_type: Literal["reverse_kl", "forward_kl", "js_divergence", "alpha_divergence"] = "reverse_kl",
        f_alpha_divergence_coef: float = 0.5,
        rpo_alpha: float | None = None,
        disable_dropout: bool = True,
        dtype: str | None = None,
        attn_implementation: str | None = None,
        trust_remote_code: bool = False,
        gradient_checkpointing: bool = False,
        compile: bool | dict[str, Any] = False,
        fused_logps: bool = True,
        logps_chunk_size: int | None = None,
        padding_free: bool | None = None,
        share_prompt: bool | None = None,
        optimizer: OptimizerCallable = PaperRMSprop,
        lr_scheduler: LRSchedulerCallable | None = LinearWarmup,
    ) -> None:
        super().__init__()
        # Only primitives go into checkpoints (loadable with weights_only=True); the CLI's saved
        # config.yaml keeps the injected callables.
        self.save_hyperparameters(ignore=["optimizer", "lr_scheduler"])
        self.optimizer_factory = optimizer
        self.lr_scheduler_factory = lr_scheduler
        specs = loss_specs(loss_type)
        if ld_alpha is not None and not 0.0 <= ld_alpha <= 1.0:
            raise ValueError(f"ld_alpha must lie in [0, 1], got {ld_alpha}")
        self.logs_nll = rpo_alpha is not None or any(spec.needs_nll for spec in specs)
        self.resolved_reference_mode = resolve_reference_mode(reference_mode, specs, loss_type)

        self.policy: nn.Module | None = None
        self.reference: Reference = make_reference(
            self.resolved_reference_mode,
            self._load,
            model_name_or_path,
            ref_model_name_or_path,
            sync=sync_ref_model,
            cache_dir=reference_cache_dir,
            precompute_batch_size=precompute_batch_size,
        )
        self._last_sync_step = -1
        names = (*METRIC_NAMES, "nll_loss") if self.logs_nll else METRIC_NAMES
        self.val_metrics = PreferenceMetrics(names)
        self.test_metrics = PreferenceMetrics(names)
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
        hp = self.hparams
        # The options reach the reference strategies' completion_logps calls too.
        options = {"fused_head": hp.fused_logps, "chunk_size": hp.logps_chunk_size, "padding_free": hp.padding_free,
                   "share_prompt": hp.share_prompt}  # fmt: skip
        with logps_options(**options):
            policy = completion_logps(self.policy, batch, ld_alpha=hp.ld_alpha, with_wpo=hp.use_weighting)  # (2B,)
            reference = self.reference.logps(batch, ld_alpha=hp.ld_alpha)  # (2B,) or None
        chosen, rejected = _split_pairs(policy)
        ref_chosen, ref_rejected = _split_pairs(reference) if reference is not None else (None, None)
        out = preference_loss(
            chosen.logps,
            rejected.logps,
            ref_chosen.logps if ref_chosen is not None else None,
            ref_rejected.logps if ref_rejected is not None else None,
            loss_type=hp.loss_type,
            loss_weights=hp.loss_weights,
            beta=hp.beta,
            label_smoothing=hp.label_smoothing,
            discopop_tau=hp.discopop_tau,
            simpo_gamma=hp.simpo_gamma,
            f_divergence_type=hp.f_divergence_type,
            f_alpha_divergence_coef=hp.f_alpha_divergence_coef,
            rpo_alpha=hp.rpo_alpha,
            chosen_lengths=chosen.num_tokens,
            rejected_lengths=rejected.num_tokens,
            chosen_nll_logps=chosen.raw_logps,
            # WPO (Zhou et al. 2024, arXiv 2406.11827, Eq. 2): w = exp(mean aligned log p) of both completions.
            pair_weights=torch.exp(chosen.wpo_log_weights + rejected.wpo_log_weights) if hp.use_weighting else None,
        )
        stats = pair_statistics(out, chosen, rejected)
        if policy.computed_tokens is not None:  # a packed batch: what packing saved against padding
            stats["tokens_saved"] = _tokens_saved(policy.computed_tokens, batch["input_ids"].shape[1])
        return out.losses.mean(), stats

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
        strategy = self._trainer.strategy if self._trainer is not None else None
        if type(strategy).__name__ == "DeepSpeedStrategy":
            check_deepspeed_strategy(strategy)  # the frozen reference stays out of its checkpoints
        # The frozen reference is in eval mode on purpose; Lightning warns about any eval-mode module at
        # the start of fit. Silence exactly that message, and only when we hold a reference model.
        if self.resolved_reference_mode != "none":
            warnings.filterwarnings(
                "ignore", message=re.escape("Found ") + r"\d+ module\(s\) in eval mode", category=PossibleUserWarning
            )

    def on_fit_start(self) -> None:
        self._check_tokenizer_fits()
        self._log_data_report()
        self.reference.before_fit(self)

    def _log_data_report(self) -> None:
        """What the data module read, kept, dropped (by reason) and truncated, logged with the run so that
        nothing is dropped silently."""
        report = getattr(self.trainer.datamodule, "data_report", None) if self.trainer.datamodule else None
        if report and self.trainer.is_global_zero:
            for logger in self.trainer.loggers:
                logger.log_metrics(flatten_report(report), step=0)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["reference_state"] = self.reference.state_for_checkpoint()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.reference.load_checkpoint_state(checkpoint.get("reference_state", {}))

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        step = self.trainer.global_step  # optimizer steps; several batches share one under accumulation
        if self.hparams.sync_ref_model and step % self.hparams.ref_model_sync_steps == 0 and step != self._last_sync_step:
            self._last_sync_step = step
            self.reference.sync(self.policy, self.hparams.ref_model_mixup_alpha)

    def _check_tokenizer_fits(self) -> None:
        tokenizer = getattr(self.trainer.datamodule, "tokenizer", None) if self.trainer.datamodule else None
        if tokenizer is not None and len(tokenizer) > vocab_size(self.policy):
            raise ValueError(
                f"the tokenizer has {len(tokenizer)} tokens but the model {self.hparams.model_name_or_path!r} "
                f"predicts only {vocab_size(self.policy)}: use the model's own tokenizer "
                "(data.tokenizer_name_or_path) or resize the model's embeddings"
            )


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
