"""``lightning-dpo data``: the report of a dry run, which writes nothing."""

from __future__ import annotations

import os

import yaml

from lightning_dpo.cli import main


def test_the_data_command_prints_the_report_and_changes_nothing(
    tmp_path, capsys, tiny_data_dir, tiny_model_dir, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / "cache"
    config = tmp_path / "run.yaml"  # a fit config: trainer and model keys are accepted and ignored
    config.write_text(
        yaml.safe_dump(
            {
                "seed_everything": 1,
                "trainer": {"max_steps": 3},
                "model": {"model_name_or_path": str(tiny_model_dir), "loss": {"beta": 0.2}},
                "data": {
                    "dataset": str(tiny_data_dir),
                    "max_length": 64,
                    "max_prompt_length": 32,
                    "cache_dir": str(cache),
                },
            }
        )
    )
    assert main(["data", "--config", str(config), "--data.batch_size=4"]) == 0
    out = capsys.readouterr().out
    assert "[train]" in out and "rows read 48, kept 48, dropped 0" in out and "[val]" in out
    assert "prompt tokens" in out and "p90" in out and "truncation touched" in out
    assert "padding" in out and "grouped by length" in out
    assert "⟦<s>\\n\\nHuman:" in out and "</s>⟧" in out  # one pair, boundaries marked, special tokens shown
    assert not cache.exists() and os.listdir(tmp_path) == ["run.yaml"]  # nothing written
