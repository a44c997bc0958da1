"""``lightning-dpo evaluate`` end to end on tiny models: run directories, checkpoints, CSV, samples, PNG."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from lightning_dpo import DPOModule, PreferenceDataModule
from lightning_dpo.cli import main
from lightning_dpo.models import load_causal_lm, load_tokenizer
from lightning_dpo.namespace import pl
from lightning_dpo.tools.frontier import CSV_FIELDS, evaluate, read_csv
from lightning_dpo.tools.model_sources import expand_source


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_model_dir):
    """A run directory as HFExportCallback leaves it: hparams.yaml, hf_model/ (changed weights) and
    hf_model/step-1/ (the starting weights, i.e. the reference itself)."""
    run = tmp_path_factory.mktemp("runs") / "beta-run" / "version_0"
    (run / "hf_model" / "step-1").mkdir(parents=True)
    (run / "hparams.yaml").write_text(
        yaml.safe_dump({"model_name_or_path": str(tiny_model_dir), "loss": {"beta": 0.25}})
    )
    model, tokenizer = load_causal_lm(str(tiny_model_dir)), load_tokenizer(str(tiny_model_dir))
    model.save_pretrained(run / "hf_model" / "step-1")
    tokenizer.save_pretrained(run / "hf_model" / "step-1")
    with torch.no_grad():
        model.lm_head.weight.add_(
            0.5 * torch.randn_like(model.lm_head.weight, generator=torch.Generator().manual_seed(0))
        )
    model.save_pretrained(run / "hf_model")
    tokenizer.save_pretrained(run / "hf_model")
    return run


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tiny_model_dir, tiny_data_dir):
    """A Lightning checkpoint after one DPO step."""
    root = tmp_path_factory.mktemp("ckpt-run")
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=1,
        limit_val_batches=0,
        logger=pl.loggers.CSVLogger(root, name="dpo"),
        enable_progress_bar=False,
    )
    module = DPOModule(
        model_name_or_path=str(tiny_model_dir), loss={"beta": 0.5}, optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2)
    )
    trainer.fit(
        module, PreferenceDataModule(dataset=str(tiny_data_dir), batch_size=4, max_length=96, max_prompt_length=48)
    )
    (path,) = (root / "dpo" / "version_0" / "checkpoints").glob("*.ckpt")
    return path


def test_sources_expand_runs_and_read_their_reference(tmp_path, run_dir, checkpoint, tiny_model_dir):
    sources = expand_source(str(run_dir))
    assert [s.step for s in sources] == [1, None] and {s.group for s in sources} == {"β=0.25"}
    assert sources[0].reference == str(tiny_model_dir) and sources[0].label == "β=0.25 step 1"
    assert [s.path for s in expand_source(str(run_dir.parent))] == [s.path for s in sources]  # newest version
    assert [s.step for s in expand_source(str(run_dir), all_steps=False)] == [None]
    (ckpt,) = expand_source(str(checkpoint), group="mine")
    assert ckpt.is_checkpoint and ckpt.step == 1 and ckpt.group == "mine" and ckpt.beta == 0.5
    # Two levels up (a root dir holding a logger's folder), as `plot` searches: the same newest run.
    assert [s.path for s in expand_source(str(run_dir.parent.parent))] == [s.path for s in sources]
    with pytest.raises(FileNotFoundError, match="run directory"):
        expand_source(str(tmp_path))  # no run, no model in or below it


def test_evaluate_writes_the_frontier(tmp_path, run_dir, checkpoint, tiny_data_dir, capsys):
    out = tmp_path / "eval"
    code = main(
        [
            "evaluate",
            str(run_dir),
            str(checkpoint),
            "--labels",
            "[dpo, ckpt]",
            "--dataset",
            str(tiny_data_dir),
            "--num_prompts",
            "3",
            "--samples_per_prompt",
            "2",
            "--max_new_tokens",
            "5",
            "--baseline",
            "chosen",
            "--output_dir",
            str(out),
        ]
    )
    assert code == 0
    rows = read_csv(out / "frontier.csv")
    assert list(rows[0]) == list(CSV_FIELDS)
    assert [r["label"] for r in rows] == ["dpo step 1", "dpo", "ckpt step 1"]
    assert all(r["n"] == 6 for r in rows)
    assert rows[0]["kl_mean"] == 0.0 and rows[0]["kl_sem"] == 0.0  # step 1 is the reference itself
    assert rows[1]["kl_mean"] != 0.0
    assert rows[2]["reference"].endswith("(its own reference)")
    assert all(-1 <= r["reward_mean"] <= 1 and 0 <= r["win_low"] <= r["win_rate"] <= r["win_high"] <= 1 for r in rows)
    assert all(r["wins"] + r["ties"] + r["losses"] == 6 for r in rows)
    samples = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(samples) == 3 * 6 and samples[0]["prompt"] == samples[1]["prompt"] != samples[2]["prompt"]
    assert {"label", "prompt", "completion", "reward", "log_ratio", "baseline"} <= set(samples[0])
    assert (out / "frontier.png").stat().st_size > 10_000
    assert "win rate" in capsys.readouterr().out


def test_evaluate_asks_for_a_reference_it_cannot_infer(tmp_path, tiny_model_dir, tiny_data_dir):
    kwargs = dict(dataset=str(tiny_data_dir), num_prompts=1, max_new_tokens=2, output_dir=str(tmp_path), plot=False)
    with pytest.raises(ValueError, match="pass --reference"):
        evaluate([str(tiny_model_dir)], **kwargs)
    rows = evaluate([str(tiny_model_dir)], reference=str(tiny_model_dir), baseline=str(tiny_model_dir), **kwargs)
    assert rows[0]["kl_mean"] == 0.0
    assert (rows[0]["ties"], rows[0]["win_rate"]) == (1, 0.5)  # itself, same seed: the same samples
    with pytest.raises(ValueError, match="one label per model"):
        evaluate([str(tiny_model_dir)], labels=["a", "b"], **kwargs)
