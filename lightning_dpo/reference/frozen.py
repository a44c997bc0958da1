"""``frozen``: a frozen copy of the policy, or a separately loaded model."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

import torch
from torch import Tensor, nn

from lightning_dpo.logps import LogpsOptions, SequenceLogps, completion_logps
from lightning_dpo.models import vocab_size
from lightning_dpo.ops.low_precision import DTYPES, store_parameters_in
from lightning_dpo.reference.base import Reference, ReferenceSettings, register_reference
from lightning_dpo.sharding import is_partitioned


@register_reference("frozen")
class FrozenReference(Reference):
    """A frozen model: a deep copy of the policy at build time, or the model ``load_separate()`` returns.

    It stays in eval mode (``train()`` cannot switch it back), has ``requires_grad=False`` everywhere so it
    gets no gradients and no optimizer state, and runs under ``torch.no_grad``. With ``dtype`` its weights are
    narrowed once prepared (:mod:`lightning_dpo.ops.low_precision`).
    """

    supports_sync = True
    loads_separate_model = True
    supports_dtype = True

    def __init__(
        self,
        load_separate: Callable[[], nn.Module] | None = None,
        source: str | None = None,
        sync: bool = False,
        reload: Callable[[], nn.Module] | None = None,
        dtype: str | None = None,
    ) -> None:
        super().__init__(sync)
        if dtype is not None and dtype not in DTYPES:
            raise ValueError(f"reference.dtype must be one of {sorted(DTYPES)} or null, got {dtype!r}")
        self.dtype = dtype
        self.bytes_saved = 0
        self._reload = reload  # loads the policy's source again, where a deep copy cannot work (ZeRO-3)
        self._load_separate = load_separate
        self._source = source
        self.model: nn.Module | None = None

    @classmethod
    def build(
        cls, settings: ReferenceSettings, load: Callable[[str], nn.Module], policy_source: str
    ) -> FrozenReference:
        separate = settings.model_name_or_path
        return cls(
            partial(load, separate) if separate else None,
            separate,
            settings.sync,
            reload=partial(load, policy_source),
            dtype=settings.dtype,
        )

    def prepare(self, policy: nn.Module) -> None:
        if self.model is not None:
            return
        if self._load_separate is None:
            # A ZeRO-3-partitioned policy holds no weights to copy: load the source again instead.
            model = self._reload() if self._reload is not None and is_partitioned(policy) else copy.deepcopy(policy)
        else:
            model = self._load_separate()
            check_same_vocabulary(policy, model, self._source)
            if self.sync_enabled:
                check_same_parameters(policy, model, self._source)
        model.requires_grad_(False)
        if self.dtype is not None:
            self.bytes_saved = store_parameters_in(model, DTYPES[self.dtype])
        self.model = model
        self.train(False)

    def shard(self, fn: Callable[[nn.Module], Any]) -> None:
        fn(self.model)

    def train(self, mode: bool = True) -> FrozenReference:
        return super().train(False)

    @torch.no_grad()
    def logps(self, batch: dict[str, Tensor], options: LogpsOptions, ld_alpha: float | None = None) -> SequenceLogps:
        assert self.model is not None, "FrozenReference.prepare() was not called (DPOModule.configure_model)"
        return completion_logps(self.model, batch, options=options, ld_alpha=ld_alpha)

    @torch.no_grad()
    def sync(self, policy: nn.Module, alpha: float) -> None:
        """TR-DPO (Gorbatovski et al. 2024, arXiv 2404.09656): θ_ref ← α·θ + (1 − α)·θ_ref, parameter by
        parameter (α = 1 is the hard update)."""
        policy_params = dict(policy.named_parameters())
        for name, ref_param in self.model.named_parameters():
            ref_param.lerp_(policy_params[name].detach().to(ref_param.dtype), alpha)

    @contextmanager
    def as_reference(self) -> Iterator[nn.Module]:
        yield self.model


def check_same_vocabulary(policy: nn.Module, reference: nn.Module, source: str | None) -> None:
    """DPO compares log-probs of the same token ids under both models: their vocabularies must match."""
    policy_vocab, reference_vocab = vocab_size(policy), vocab_size(reference)
    if policy_vocab != reference_vocab:
        raise ValueError(
            f"reference model {source!r} has a vocabulary of {reference_vocab} tokens but the policy has "
            f"{policy_vocab}: DPO compares the log-probs of the same token ids under both models, so they must "
            "share a tokenizer. Use a reference from the same model family, or leave reference.model_name_or_path "
            "unset "
            "to copy the policy."
        )


def check_same_parameters(policy: nn.Module, reference: nn.Module, source: str | None) -> None:
    """TR-DPO mixes weights parameter by parameter: names and shapes must match."""
    policy_shapes = {n: p.shape for n, p in policy.named_parameters()}
    reference_shapes = {n: p.shape for n, p in reference.named_parameters()}
    if policy_shapes != reference_shapes:
        raise ValueError(
            f"sync_ref_model (TR-DPO) mixes policy weights into the reference, but reference {source!r} does not "
            "have the policy's parameters (names and shapes); leave reference.model_name_or_path unset"
        )
