"""DPOModule on the fast path: the same losses, rewards and gradients as on full logits, for every reference
strategy, and what a packed run logs."""

from __future__ import annotations

import pytest
import torch

from lightning_dpo import DPOModule
from lightning_dpo.logps import LogpsOptions
from lightning_dpo.namespace import pl
from lightning_dpo.reference.precomputed import PrecomputedReference

TOL = {"rtol": 1e-5, "atol": 1e-5}


@pytest.fixture
def batch(make_data, embedded_model_dir):
    datamodule = make_data(embedded_model_dir)
    datamodule.setup("fit")
    return next(iter(datamodule.train_dataloader()))


def step(module, batch, **options):
    """Loss, per-pair statistics and policy gradients of one dpo_step under ``options``."""
    module.logps_options = LogpsOptions(**options)
    module.policy.zero_grad(set_to_none=True)
    loss, stats = module.dpo_step(batch)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in module.policy.named_parameters() if p.grad is not None}
    return loss.detach(), stats, grads


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"reference": {"mode": "adapter"}, "lora": {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}},
        {"loss": {"type": "simpo"}},  # reference-free
        {"loss": {"ld_alpha": 0.5, "use_weighting": True, "rpo_alpha": 1.0}},
    ],
    ids=["frozen", "adapter", "none", "ld+wpo+rpo"],
)
def test_fast_path_matches_full_logits(embedded_model_dir, batch, settings):
    if "lora" in settings:
        pytest.importorskip("peft")
    torch.manual_seed(0)
    others = {k: v for k, v in settings.items() if k != "loss"}
    module = DPOModule(
        model_name_or_path=str(embedded_model_dir), loss={"beta": 0.5, **settings.get("loss", {})}, **others
    )
    module.configure_model()
    with torch.no_grad():  # move the policy off its reference so that rewards and margins are not all 0
        for param in module.policy.parameters():
            if param.requires_grad:
                param.add_(0.01 * torch.randn_like(param))
    ref_loss, ref_stats, ref_grads = step(module, batch, fused_head=False)
    for layout in ({"padding_free": False, "share_prompt": False}, {"padding_free": True, "share_prompt": True}):
        loss, stats, grads = step(module, batch, fused_head=True, **layout)
        torch.testing.assert_close(loss, ref_loss, **TOL)
        for name in ("rewards/chosen", "rewards/rejected", "logps/chosen", "logits/chosen", "logits/rejected"):
            torch.testing.assert_close(stats[name].values, ref_stats[name].values, **TOL, msg=name)
        assert grads.keys() == ref_grads.keys()
        for name, grad in ref_grads.items():
            scale = max(1.0, float(grad.abs().max()))
            torch.testing.assert_close(grads[name], grad, rtol=1e-5, atol=1e-5 * scale, msg=name)
    assert "tokens_saved" in stats and float(stats["tokens_saved"].values.mean()) > 0.3  # shared prompts


def test_precomputed_reference_uses_the_fast_path_too(
    embedded_model_dir, tiny_data_dir, tmp_path, monkeypatch, make_data, make_trainer
):
    """The precompute pass calls completion_logps like every strategy: its table equals the frozen logps."""
    calls = []
    import lightning_dpo.ops.hidden as hidden

    original = hidden.completion_hidden

    def counting(*args, **kwargs):
        out = original(*args, **kwargs)
        calls.append(out is not None)
        return out

    monkeypatch.setattr("lightning_dpo.logps.completion_hidden", counting)
    module = DPOModule(
        model_name_or_path=str(embedded_model_dir),
        reference={"mode": "precomputed", "cache_dir": str(tmp_path)},
        optimizer=lambda p: torch.optim.AdamW(p, lr=1e-3),
        lr_scheduler=None,
    )
    trainer = make_trainer(max_steps=1)
    trainer.fit(module, make_data(embedded_model_dir))
    assert isinstance(module.reference, PrecomputedReference)
    assert calls and all(calls)


def test_a_packed_fit_logs_the_tokens_it_saved(embedded_model_dir, tiny_data_dir, tmp_path, make_data, make_trainer):
    module = DPOModule(
        model_name_or_path=str(embedded_model_dir), optimizer=lambda p: torch.optim.AdamW(p, lr=1e-3), lr_scheduler=None
    )
    logger = pl.loggers.CSVLogger(tmp_path)
    trainer = make_trainer(max_steps=2, logger=logger, log_every_n_steps=1)
    trainer.fit(module, make_data(embedded_model_dir))
    metrics = (tmp_path / "lightning_logs" / "version_0" / "metrics.csv").read_text().splitlines()
    header = metrics[0].split(",")
    assert "train/tokens_saved" in header
    column = [row.split(",")[header.index("train/tokens_saved")] for row in metrics[1:]]
    values = [float(v) for v in column if v]
    assert len(values) == 2 and all(0.2 < v < 1 for v in values)  # shared prompts and no padding
