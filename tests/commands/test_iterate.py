"""``lightning-dpo iterate``: two rounds on the embedded model leave each round's pairs, run and evaluation in
its folder, chain the policies, set the reference by choice, and resume without redoing finished work."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from lightning_dpo.commands.iterate import build_parser, iterate
from lightning_dpo.embedded import DEFAULT_MODEL

REPO = Path(__file__).resolve().parents[2]
SMALL = dict(
    generate={
        "num_prompts": 12,
        "samples_per_prompt": 2,
        "batch_size": 6,
        "sampling": {"max_new_tokens": 24},
        "reward": "lightning_dpo.tasks.politeness.politeness_reward",
        "accelerator": "cpu",
        "progress": False,
    },
    fit_args=[
        "--trainer.max_steps",
        "2",
        "--trainer.accelerator",
        "cpu",
        "--data.batch_size",
        "2",
        "--data.val_size",
        "2",
        "--trainer.val_check_interval",
        "1.0",
        "--trainer.limit_val_batches",
        "1",
        "--trainer.enable_progress_bar",
        "false",
    ],
    evaluate={"num_prompts": 4, "max_new_tokens": 16, "device": "cpu"},
)


def test_two_rounds_chain_policies_and_resume(tmp_path):
    rows = iterate(DEFAULT_MODEL, output_dir=str(tmp_path), rounds=2, reference="previous", **SMALL)
    assert [r["round"] for r in rows] == [0, 1, 2]
    for r in (1, 2):
        folder = tmp_path / f"round-{r}"
        assert (folder / "pairs" / "train.jsonl").is_file() and (folder / "eval" / "frontier.csv").is_file()
        hparams = yaml.safe_load((folder / "fit" / "version_0" / "hparams.yaml").read_text())
        start = DEFAULT_MODEL if r == 1 else str(tmp_path / "round-1" / "fit" / "version_0" / "hf_model")
        assert hparams["model_name_or_path"] == start  # each round starts from the previous round's policy
        assert hparams["reference"]["model_name_or_path"] == start  # reference: previous
        meta = yaml.safe_load((folder / "pairs" / "train.jsonl.meta.yaml").read_text())
        assert meta["settings"]["model"] == start and meta["settings"]["sampling"]["seed"] == r
    assert rows[0]["kl_mean"] == 0.0 or abs(rows[0]["kl_mean"]) < 1e-6  # the start model against itself
    lines = (tmp_path / "rounds.csv").read_text().splitlines()
    assert len(lines) == 4 and lines[0].startswith("round,pairs,reward_mean")

    # Round 2 was interrupted after its fit: only its evaluation runs again; round 1 is not touched.
    (tmp_path / "round-2" / "round.json").unlink()
    export = tmp_path / "round-2" / "fit" / "version_0" / "hf_model" / "model.safetensors"
    before = (export.stat().st_mtime_ns, (tmp_path / "round-1" / "round.json").stat().st_mtime_ns)
    again = iterate(DEFAULT_MODEL, output_dir=str(tmp_path), rounds=2, reference="previous", **SMALL)
    assert (export.stat().st_mtime_ns, (tmp_path / "round-1" / "round.json").stat().st_mtime_ns) == before
    assert [r["pairs"] for r in again] == [r["pairs"] for r in rows]
    assert again[2]["reward_mean"] == rows[2]["reward_mean"]  # the same model and seed: the same evaluation


def test_reference_initial_and_the_bundled_config(tmp_path):
    rows = iterate(DEFAULT_MODEL, output_dir=str(tmp_path), rounds=1, reference="initial", **SMALL)
    hparams = yaml.safe_load((tmp_path / "round-1" / "fit" / "version_0" / "hparams.yaml").read_text())
    assert hparams["reference"]["model_name_or_path"] == DEFAULT_MODEL
    assert json.loads((tmp_path / "round-1" / "round.json").read_text())["pairs"] == rows[1]["pairs"] > 0
    config = build_parser().parse_args(["--config", str(REPO / "configs/onpolicy/iterative-polite.yaml")])
    assert config.rounds == 2 and config.reference in ("initial", "previous")
    assert config.generate["reward"] == "lightning_dpo.tasks.politeness.politeness_reward"


def test_rankings_need_a_fit_config_that_reads_them(tmp_path):
    generate = {**SMALL["generate"], "pairs": {"rule": "ranking"}}
    with pytest.raises(ValueError, match="RankingDataModule, model.loss.type: plackett_luce"):
        iterate(DEFAULT_MODEL, output_dir=str(tmp_path), rounds=1, generate=generate)
    assert not any(tmp_path.iterdir())  # refused before round 0's evaluation
