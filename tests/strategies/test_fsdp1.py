"""FSDP1 (FSDPStrategy; GPU only in Lightning): DPOAutoWrapPolicy on torch's own FullyShardedDataParallel, on
a one-process CPU (gloo) group, as far as FSDP1 itself runs without a GPU: the unit layout, and gathering the
full policy for export."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from torch.distributed.fsdp import FullyShardedDataParallel as FSDP
from transformers import AutoModelForCausalLM

from lightning_dpo import DPOModule
from lightning_dpo.callbacks.export import save_policy
from lightning_dpo.sharding import DPOAutoWrapPolicy, full_policy_state_dict


@pytest.fixture
def one_process_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def wrap(module: DPOModule, **kwargs) -> FSDP:
    # As FSDPStrategy wraps the LightningModule, but with use_orig_params=False: then FSDP itself refuses any
    # FlatParameter that would mix requires_grad values, so the layout is checked by FSDP.
    return FSDP(module, use_orig_params=False, device_id=torch.device("cpu"), **kwargs)


def test_policy_and_reference_get_their_own_units(tiny_model_dir, one_process_group):
    module = DPOModule(model_name_or_path=str(tiny_model_dir))
    module.configure_model()
    wrapped = wrap(module, auto_wrap_policy=DPOAutoWrapPolicy())
    units = {id(u): u for u in wrapped.modules() if isinstance(u, FSDP)}
    assert isinstance(module.policy, FSDP) and isinstance(module.reference.model, FSDP)
    assert len(units) == 1 + 2 * (1 + 2)  # the root, then per model: itself and its 2 decoder layers
    for unit in units.values():
        flags = {p.requires_grad for p in unit.params}
        assert len(flags) <= 1  # no FlatParameter mixes trainable and frozen weights
    assert not list(wrapped.params)  # the DPOModule root unit holds nothing of its own


def test_without_the_policy_fsdp_would_mix_them(tiny_model_dir, one_process_group):
    module = DPOModule(model_name_or_path=str(tiny_model_dir))
    module.configure_model()
    with pytest.raises(ValueError, match="uniform `requires_grad`"):
        wrap(module)


def test_export_gathers_the_full_policy(tmp_path, tiny_model_dir, one_process_group):
    module = DPOModule(model_name_or_path=str(tiny_model_dir))
    module.configure_model()
    wrapped = wrap(module, auto_wrap_policy=DPOAutoWrapPolicy())
    state = full_policy_state_dict(module.policy, wrapped)
    save_policy(module.policy, str(tmp_path / "hf"), state_dict=state)
    exported = AutoModelForCausalLM.from_pretrained(tmp_path / "hf").state_dict()
    original = AutoModelForCausalLM.from_pretrained(tiny_model_dir).state_dict()
    assert exported.keys() == original.keys()
    for key, value in original.items():
        assert torch.equal(exported[key], value), key
