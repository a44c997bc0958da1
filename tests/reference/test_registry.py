"""The registry of reference modes, mode resolution, and which model each mode hands out as the reference."""

from __future__ import annotations

import pytest

from lightning_dpo import DPOModule
from lightning_dpo.losses import LossSettings
from lightning_dpo.reference import REFERENCES, NoReference, Reference, ReferenceSettings, register_reference
from lightning_dpo.reference.base import make_reference, resolve_reference_mode


def test_every_documented_mode_is_registered():
    assert set(REFERENCES) == {"frozen", "adapter", "precomputed", "none"}
    assert all(cls.name == name for name, cls in REFERENCES.items())


def test_auto_follows_the_loss():
    assert resolve_reference_mode("auto", LossSettings()) == "frozen"
    assert resolve_reference_mode("auto", LossSettings(type="simpo")) == "none"
    with pytest.raises(ValueError, match="reference-free"):
        resolve_reference_mode("frozen", LossSettings(type="simpo"))
    with pytest.raises(ValueError, match=r"one of \['adapter', 'frozen', 'none', 'precomputed'\]"):
        resolve_reference_mode("frozen-copy", LossSettings())


def test_a_new_mode_is_one_registration():
    @register_reference("test-constant")
    class Constant(Reference):
        def logps(self, batch, options, ld_alpha=None):
            return None

    try:
        module = DPOModule(reference={"mode": "test-constant"})
        assert isinstance(module.reference, Constant) and module.reference.name == "test-constant"
        with pytest.raises(ValueError, match="already registered"):
            register_reference("test-constant")(Constant)
    finally:
        REFERENCES.pop("test-constant")


@pytest.mark.parametrize("mode", ["adapter", "none"])
def test_a_separate_reference_model_is_refused_where_it_means_nothing(mode):
    with pytest.raises(ValueError, match=f"not used by reference mode '{mode}'"):
        make_reference(ReferenceSettings(mode=mode, model_name_or_path="x"), LossSettings(), lambda name: None, "p")


def test_as_reference_yields_the_model_that_computes_as_the_reference(tiny_model_dir, tmp_path):
    frozen = DPOModule(model_name_or_path=str(tiny_model_dir))
    frozen.configure_model()
    with frozen.reference.as_reference() as model:
        assert model is frozen.reference.model and model is not frozen.policy
    for reference in ({"mode": "none"}, {"mode": "precomputed", "cache_dir": str(tmp_path)}):
        module = DPOModule(model_name_or_path=str(tiny_model_dir), reference=reference)
        module.configure_model()
        with module.reference.as_reference() as model:
            assert model is None  # no reference model is held: nothing to generate from
    assert isinstance(DPOModule(loss={"type": "simpo"}).reference, NoReference)
