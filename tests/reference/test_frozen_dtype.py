"""``reference.dtype``: a bf16-stored frozen reference; its log-probs are fp32 maths on rounded weights."""

from __future__ import annotations

import pytest
import torch

from lightning_dpo import DPOModule
from lightning_dpo.logps import LogpsOptions
from lightning_dpo.losses import LossSettings
from lightning_dpo.reference import ReferenceSettings
from lightning_dpo.reference.base import make_reference


@pytest.mark.parametrize("fused_head", [True, False])
def test_a_bf16_reference_is_fp32_maths_on_rounded_weights(tiny_model_dir, train_batch, fused_head):
    narrow = DPOModule(model_name_or_path=str(tiny_model_dir), reference={"dtype": "bfloat16"})
    narrow.configure_model()
    assert all(p.dtype == torch.bfloat16 for p in narrow.reference.model.parameters())
    assert all(p.dtype == torch.float32 for p in narrow.policy.parameters())
    parameters = sum(p.numel() for p in narrow.policy.parameters())
    assert narrow.reference.bytes_saved == 2 * parameters

    rounded = DPOModule(model_name_or_path=str(tiny_model_dir))
    rounded.configure_model()
    with torch.no_grad():
        for p in rounded.reference.model.parameters():
            p.copy_(p.bfloat16().float())
    options = LogpsOptions(fused_head=fused_head)
    got = narrow.reference.logps(train_batch, options)
    expected = rounded.reference.logps(train_batch, options)
    assert got.logps.dtype == torch.float32
    torch.testing.assert_close(got.logps, expected.logps, rtol=0, atol=1e-4)
    exact = DPOModule(model_name_or_path=str(tiny_model_dir))
    exact.configure_model()
    full = exact.reference.logps(train_batch, options).logps
    assert not torch.equal(got.logps, full)  # the weights were really rounded
    torch.testing.assert_close(got.logps, full, rtol=1e-2, atol=0.5)


def test_a_fit_with_a_bf16_reference_runs(tiny_model_dir, make_data, make_trainer):
    module = DPOModule(model_name_or_path=str(tiny_model_dir), reference={"dtype": "bfloat16"})
    make_trainer(max_steps=2, limit_val_batches=1).fit(module, make_data())
    assert all(p.dtype == torch.bfloat16 for p in module.reference.model.parameters())


@pytest.mark.parametrize("mode", ["adapter", "none", "precomputed"])
def test_dtype_is_refused_where_there_is_no_reference_model(mode):
    with pytest.raises(ValueError, match="reference.dtype"):
        make_reference(ReferenceSettings(mode=mode, dtype="bfloat16"), LossSettings(), lambda name: None, "p")


def test_an_unknown_dtype_is_refused():
    with pytest.raises(ValueError, match="reference.dtype must be one of"):
        DPOModule(reference={"dtype": "bf16"})
