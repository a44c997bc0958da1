"""``adapter``: the reference is the LoRA policy with its adapter disabled -- one copy of the base weights."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

from lightning_dpo.logps import LogpsOptions, SequenceLogps, completion_logps
from lightning_dpo.models import is_peft_model
from lightning_dpo.reference.base import Reference, register_reference

REF_ADAPTER = "ref"


@register_reference("adapter")
class AdapterReference(Reference):
    """Reference log-probs from the policy's own network with the trained adapter switched off.

    With TR-DPO (``sync``) the reference is instead the base plus a second, frozen adapter named ``ref``,
    a copy of the initial adapter that ``sync`` moves towards the trained one; the base never changes.
    The policy is held by reference, not as a submodule: its weights belong to the policy.
    """

    supports_sync = True

    def __init__(self, sync: bool = False) -> None:
        super().__init__(sync)
        self._policy: list[nn.Module] = []  # a list, so that nn.Module does not register it

    def keeps(self, key: str) -> bool:
        return self.sync_enabled and f".{REF_ADAPTER}." in key  # TR-DPO moves the frozen ref adapter

    @property
    def policy(self) -> nn.Module:
        assert self._policy, "AdapterReference.prepare() was not called (DPOModule.configure_model)"
        return self._policy[0]

    def prepare(self, policy: nn.Module) -> None:
        if self._policy:
            return
        if not is_peft_model(policy):
            raise ValueError(
                "reference mode 'adapter' needs a LoRA policy: set model.lora, e.g. "
                "{r: 16, lora_alpha: 32, target_modules: all-linear}"
            )
        self._policy.append(policy)
        if self.sync_enabled and REF_ADAPTER not in policy.peft_config:
            active = policy.active_adapter
            policy.add_adapter(REF_ADAPTER, policy.peft_config[active])
            with torch.no_grad():
                for ref_param, param in self._adapter_pairs(active):
                    ref_param.copy_(param)
            policy.set_adapter(active)  # add_adapter leaves the active one; make sure only it trains
            for name, param in policy.named_parameters():
                if f".{REF_ADAPTER}." in name:
                    param.requires_grad_(False)

    def _adapter_pairs(self, active: str) -> Iterator[tuple[nn.Parameter, nn.Parameter]]:
        params = dict(self.policy.named_parameters())
        for name, param in params.items():
            if f".{active}." in name:
                yield params[name.replace(f".{active}.", f".{REF_ADAPTER}.")], param

    @contextmanager
    def as_reference(self) -> Iterator[nn.Module]:
        """The policy, computing as the reference for the duration of the block."""
        policy = self.policy
        if not self.sync_enabled:
            with policy.disable_adapter():
                yield policy
            return
        active = policy.active_adapter
        trainable = {n for n, p in policy.named_parameters() if p.requires_grad}
        policy.set_adapter(REF_ADAPTER)
        try:
            yield policy
        finally:
            policy.set_adapter(active)
            for name, param in policy.named_parameters():  # set_adapter toggles requires_grad: restore it
                param.requires_grad_(name in trainable)

    @torch.no_grad()
    def logps(self, batch: dict[str, Tensor], options: LogpsOptions, ld_alpha: float | None = None) -> SequenceLogps:
        with self.as_reference() as model:
            return completion_logps(model, batch, options=options, ld_alpha=ld_alpha)

    @torch.no_grad()
    def sync(self, policy: nn.Module, alpha: float) -> None:
        """TR-DPO on the adapter: ref adapter ← α·trained adapter + (1 − α)·ref adapter."""
        for ref_param, param in self._adapter_pairs(self.policy.active_adapter):
            ref_param.lerp_(param.detach().to(ref_param.dtype), alpha)
