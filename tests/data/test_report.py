"""The data report: numbers for the run's logger, and the `lightning-dpo data` dry run."""

import os

import numpy as np
import yaml

from lightning_dpo.cli import main
from lightning_dpo.data.report import flatten_report, format_report, percentiles, skipped_warning


def test_percentiles_are_token_counts_that_occur():
    assert percentiles(np.arange(1, 101)) == {"p50": 50, "p90": 90, "p95": 95, "p99": 99, "max": 100}
    assert percentiles(np.array([], dtype=int))["max"] == 0


def test_warning_and_flat_metrics():
    report = {"read": 10, "kept": 7, "pairs": 7, "dropped": {"duplicate": 2, "no_completion_tokens": 1},
              "first_dropped": [{"location": "f.jsonl:4", "field": None, "message": "exact duplicate of f.jsonl:1"}],
              "lengths": {"prompt": {"p50": 3}}, "padding": {"shuffled": 0.3, "grouped_by_length": 0.1}}
    text = skipped_warning("train", report)
    assert text.startswith("train: dropped 3 of 10 records (2 duplicate, 1 no_completion_tokens); first: f.jsonl:4")
    assert "max_length" in text
    assert skipped_warning("val", {"read": 3, "dropped": {}}) is None
    flat = flatten_report({"train": report})
    assert flat["data/train/dropped/duplicate"] == 2 and flat["data/train/padding/shuffled"] == 0.3
    assert "data/train/first_dropped" not in flat
    assert "duplicate" in format_report({"train": report})


def test_the_data_command_prints_the_report_and_changes_nothing(
    tmp_path, capsys, tiny_data_dir, tiny_model_dir, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / "cache"
    config = tmp_path / "run.yaml"  # a fit config: trainer and model keys are accepted and ignored
    config.write_text(yaml.safe_dump({
        "seed_everything": 1,
        "trainer": {"max_steps": 3},
        "model": {"model_name_or_path": str(tiny_model_dir), "beta": 0.2},
        "data": {"dataset": str(tiny_data_dir), "max_length": 64, "max_prompt_length": 32, "cache_dir": str(cache)},
    }))
    assert main(["data", "--config", str(config), "--data.batch_size=4"]) == 0
    out = capsys.readouterr().out
    assert "[train]" in out and "rows read 48, kept 48, dropped 0" in out and "[val]" in out
    assert "prompt tokens" in out and "p90" in out and "truncation touched" in out
    assert "padding" in out and "grouped by length" in out
    assert "⟦<s>\\n\\nHuman:" in out and "</s>⟧" in out  # one pair, boundaries marked, special tokens shown
    assert not cache.exists() and os.listdir(tmp_path) == ["run.yaml"]  # nothing written
