"""OnlineDPOModule: TRL's pairing and missing-EOS penalty, the logged sample metrics, losses and reference modes
of the registry, the refusal of precomputed references, and the command on 2 DDP CPU processes."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lightning_dpo.data.prompt_datamodule import PromptDataModule
from lightning_dpo.embedded import DEFAULT_MODEL
from lightning_dpo.evaluation.generation import SamplingSettings
from lightning_dpo.namespace import pl
from lightning_dpo.onpolicy.online import OnlineDPOModule
from lightning_dpo.onpolicy.sampling import SampleGroup

REPO = Path(__file__).resolve().parents[2]


def module(**overrides) -> OnlineDPOModule:
    kwargs = dict(
        model_name_or_path=DEFAULT_MODEL,
        sampling=SamplingSettings(max_new_tokens=16),
        optimizer=lambda params: torch.optim.AdamW(params, lr=1e-4),
        lr_scheduler=None,
    )
    return OnlineDPOModule(**{**kwargs, **overrides})


def fit(m: OnlineDPOModule, steps: int = 1) -> dict[str, float]:
    dm = PromptDataModule(dataset="embedded:polite", num_prompts=16, batch_size=4, val_size=0, val_split="train")
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(m, dm)
    return {k: float(v) for k, v in trainer.logged_metrics.items()}


def test_pairs_follow_trls_rule_first_wins_ties():
    m = module()
    batch = {"prompt_input_ids": [[1, 5], [1, 6], [1, 7]]}
    groups = [
        SampleGroup([[10], [11]], ["a", "b"], [True, True], [0.0, 1.0]),  # second better: (1, 0)
        SampleGroup([[12], [13]], ["c", "d"], [True, False], [0.5, 0.5]),  # a tie: the first is chosen
        SampleGroup([[14], [15]], ["e", "f"], [True, True], [2.0, -1.0]),
    ]
    pairs, counts = m.make_pairs(batch, groups)
    assert [(p["chosen_input_ids"], p["rejected_input_ids"]) for p in pairs] == [
        ([11], [10]),
        ([12], [13]),
        ([14], [15]),
    ]
    assert counts.pairs == 3 and counts.all_equal == 1


def test_missing_eos_penalty_and_sample_metrics():
    # 2 new tokens: no sample reaches EOS, so each scores 0.5 - 1.0; all equal, paired first vs second.
    m = module(
        sampling=SamplingSettings(max_new_tokens=2), missing_eos_penalty=1.0, reward_fn=lambda p, c: [0.5] * len(c)
    )
    logged = fit(m)
    assert logged["train/objective/scores"] == pytest.approx(-0.5)
    assert logged["train/val/contain_eos_token"] == 0.0 and logged["train/samples/length"] == 2.0
    assert logged["train/samples/pairs"] == 4 and logged["train/objective/scores_margin"] == 0.0
    assert logged["train/objective/kl"] == pytest.approx(0.0, abs=1e-5)  # the first step: policy = reference
    assert logged["train/objective/entropy"] > 0


@pytest.mark.parametrize("loss, reference", [("ipo", "frozen"), ("simpo", "none")])
def test_losses_and_reference_modes_of_the_registry(loss, reference):
    logged = fit(module(loss={"type": loss, "beta": 0.5}, reference={"mode": reference}), steps=2)
    assert logged["train/samples/pairs"] > 0 and torch.isfinite(torch.tensor(logged["train/loss"]))
    assert ("train/objective/kl" in logged) == (reference == "frozen")


def test_a_prompt_without_room_for_the_samples_names_the_prompt():
    with pytest.raises(ValueError, match=r"prompt .*train.jsonl:\d+ has \d+ tokens: with max_new_tokens=250"):
        fit(module(sampling=SamplingSettings(max_new_tokens=250)))


def test_precomputed_references_are_refused():
    with pytest.raises(ValueError, match="precomputed.*online DPO samples new completions"):
        module(reference={"mode": "precomputed"})


def test_the_ranking_rule_is_refused():
    with pytest.raises(ValueError, match="ranking writes rankings files.*online DPO trains on pairs"):
        module(pairs={"rule": "ranking"})


def test_the_command_on_two_ddp_processes(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
    args = ["--trainer.max_steps", "2", "--trainer.devices", "2", "--trainer.strategy", "ddp"]
    args += ["--trainer.limit_val_batches", "1", "--trainer.val_check_interval", "2", "--trainer.enable_progress_bar"]
    args += ["false", "--data.num_prompts", "16", "--data.batch_size", "2", "--model.sampling.max_new_tokens", "16"]
    args += ["--trainer.logger.init_args.save_dir", str(tmp_path)]
    done = subprocess.run(
        [sys.executable, "-m", "lightning_dpo.cli", "online", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with open(tmp_path / "polite" / "version_0" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    train = [r for r in rows if r.get("train/objective/kl")]
    assert len(train) == 2 and all(float(r["train/samples/pairs"]) >= 1 for r in train)
    assert any(r.get("val/objective/scores") for r in rows)
    assert (tmp_path / "polite" / "version_0" / "hf_model" / "config.json").is_file()  # the config exports


def test_a_checkpoint_restores_the_online_settings(tmp_path):
    m = module(samples_per_prompt=3, missing_eos_penalty=0.5, loss={"type": "ipo", "beta": 0.2})
    dm = PromptDataModule(dataset="embedded:polite", num_prompts=8, batch_size=2, val_size=0, val_split="train")
    trainer = pl.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False, limit_val_batches=0)
    trainer.fit(m, dm)
    trainer.save_checkpoint(tmp_path / "online.ckpt")
    loaded = OnlineDPOModule.load_from_checkpoint(tmp_path / "online.ckpt", weights_only=True)
    assert (loaded.k, loaded.missing_eos_penalty, loaded.loss_settings.type) == (3, 0.5, "ipo")
    assert (loaded.scoring_settings, loaded.sampling, loaded.pair_settings) == (
        m.scoring_settings,
        m.sampling,
        m.pair_settings,
    )
