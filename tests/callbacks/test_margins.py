"""RewardMarginCallback: summary statistics and where they are written."""

from types import SimpleNamespace

import pytest
import torch

from lightning_dpo.callbacks.margins import RewardMarginCallback, margin_summary


def test_margin_summary_by_hand():
    stats = margin_summary(torch.tensor([-1.0, 0.0, 1.0, 2.0, 3.0]))
    assert stats["count"] == 5 and stats["mean"] == pytest.approx(1.0)
    assert stats["std"] == pytest.approx(2**0.5)
    assert stats["p50"] == pytest.approx(1.0)
    assert stats["p10"] == pytest.approx(-0.6) and stats["p90"] == pytest.approx(2.6)
    assert stats["frac_negative"] == pytest.approx(0.2)


def test_only_global_rank_zero_writes(tmp_path):
    callback = RewardMarginCallback()
    trainer = SimpleNamespace(is_global_zero=False, loggers=[], log_dir=str(tmp_path), current_epoch=0, global_step=1)
    callback._write(trainer, "val", margin_summary(torch.ones(3)), torch.ones(3))
    assert not list(tmp_path.iterdir())
    trainer.is_global_zero = True
    callback._write(trainer, "val", margin_summary(torch.ones(3)), torch.ones(3))
    assert (tmp_path / "margins.csv").read_text().splitlines()[0].startswith("stage,epoch,step")
