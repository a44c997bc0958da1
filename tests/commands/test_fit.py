"""``lightning-dpo fit|validate``: print_config, the default config, fit on the tiny config, and the errors
for settings that moved."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
import torch
import yaml

import lightning_dpo
from lightning_dpo.cli import main
from lightning_dpo.commands.fit import DEFAULT_CONFIG, with_default_config


def test_print_config_shows_the_documented_names(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["fit", "--print_config"])
    assert exit_info.value.code in (None, 0)
    config = yaml.safe_load(capsys.readouterr().out)
    assert config["model"]["model_name_or_path"] == "embedded:tiny-polite-sft"
    assert config["model"]["reference"]["mode"] == "auto" and config["model"]["loss"]["beta"] == 0.5
    assert config["model"]["optimizer"]["class_path"] == "torch.optim.AdamW"
    for key in ("dataset", "batch_size", "max_length"):
        assert key in config["data"]


def test_default_config_only_without_a_config_of_the_users():
    assert with_default_config(["fit"]) == ["fit", "--config", str(DEFAULT_CONFIG)]
    assert with_default_config(["fit", "--config", "mine.yaml"]) == ["fit", "--config", "mine.yaml"]
    assert with_default_config(["fit", "--config=mine.yaml"]) == ["fit", "--config=mine.yaml"]


def test_repo_config_is_the_packaged_default():
    """configs/tiny.yaml, the file the README names, is the config a bare ``lightning-dpo fit`` runs: a link
    to the packaged file (so the two cannot drift), which the wheel ships."""
    repo = Path(__file__).resolve().parents[2]
    repo_config = repo / "configs" / "tiny.yaml"
    assert repo_config.is_symlink() and repo_config.resolve() == DEFAULT_CONFIG.resolve()
    package = Path(lightning_dpo.__file__).resolve().parent
    assert DEFAULT_CONFIG.resolve().parent.parent == package
    # pyproject's [tool.setuptools.package-data] line for the package (read as text: tomllib needs 3.11)
    (line,) = re.findall(r"^lightning_dpo = \[(.*)\]$", (repo / "pyproject.toml").read_text(), flags=re.M)
    shipped = re.findall(r'"([^"]+)"', line)
    assert any(DEFAULT_CONFIG.resolve().relative_to(package).match(p) for p in shipped)
    assert with_default_config(["fit"])[-1] == str(DEFAULT_CONFIG)


def test_fit_on_the_tiny_config(tmp_path, monkeypatch, tiny_model_dir, tiny_data_dir):
    monkeypatch.chdir(tmp_path)
    main(
        [
            "fit",
            f"--model.model_name_or_path={tiny_model_dir}",
            f"--data.dataset={tiny_data_dir}",
            "--data.batch_size=4",
            "--trainer.max_steps=4",
            "--trainer.val_check_interval=2",
            "--trainer.limit_val_batches=2",
            "--trainer.log_every_n_steps=1",
            "--trainer.enable_progress_bar=false",
            "--seed_everything=123",
        ]
    )
    assert torch.initial_seed() == 123
    run = tmp_path / "lightning_logs" / "version_0"
    with open(run / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    accuracies = [r["val/rewards/accuracies"] for r in rows if r.get("val/rewards/accuracies")]
    assert len(accuracies) == 2
    # The module logs the learning rate it steps with: AdamW at 1e-4 under LinearWarmup(20), steps 0..3.
    rates = sorted(float(r["train/learning_rate"]) for r in rows if r.get("train/learning_rate"))
    assert rates == pytest.approx([1e-4 * (k + 1) / 21 for k in range(4)])
    assert (run / "margins.csv").exists()

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(run / "hf_model")
    tokenizer = AutoTokenizer.from_pretrained(run / "hf_model")
    assert model.config.hidden_size == 32 and tokenizer.eos_token == "</s>"
    card = (run / "hf_model" / "README.md").read_text()
    assert "```yaml" in card and f"model_name_or_path: {tiny_model_dir}" in card  # the saved config reproduces it

    # The checkpoint (no reference weights in it) restores through the CLI.
    (checkpoint,) = (run / "checkpoints").glob("*.ckpt")
    main(
        [
            "validate",
            f"--model.model_name_or_path={tiny_model_dir}",
            f"--data.dataset={tiny_data_dir}",
            f"--ckpt_path={checkpoint}",
            "--weights_only=true",
            "--trainer.limit_val_batches=2",
            "--trainer.enable_progress_bar=false",
        ]
    )
    with open(tmp_path / "lightning_logs" / "version_1" / "metrics.csv") as f:
        (validated,) = list(csv.DictReader(f))
    assert validated["val/rewards/accuracies"] == accuracies[-1]


def test_the_readme_commands_run_without_a_logger(tmp_path, monkeypatch, tiny_model_dir, tiny_data_dir):
    """``--trainer.logger false`` with the default config: fit (with the README's overrides), then validate
    from its checkpoint. Nothing in the config needs a logger (the module logs its learning rate itself)."""
    monkeypatch.chdir(tmp_path)
    common = [
        f"--model.model_name_or_path={tiny_model_dir}",
        f"--data.dataset={tiny_data_dir}",
        "--trainer.logger=false",
        "--trainer.enable_progress_bar=false",
        "--trainer.limit_val_batches=1",
    ]
    readme = ["--model.loss.beta", "0.2", "--data.batch_size", "4"]  # "the default with changes"
    main(["fit", *common, *readme, "--trainer.max_steps=2", "--trainer.val_check_interval=2"])
    (checkpoint,) = (tmp_path / "checkpoints").glob("*.ckpt")
    assert (tmp_path / "hf_model" / "config.json").is_file() and (tmp_path / "margins.csv").is_file()
    assert not (tmp_path / "lightning_logs").exists()
    main(["validate", *common, f"--ckpt_path={checkpoint}", "--weights_only=true"])


@pytest.mark.parametrize(
    "config", sorted((__import__("pathlib").Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
)
def test_every_shipped_config_parses(config, capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--config", str(config), "--print_config"])
    assert yaml.safe_load(capsys.readouterr().out)["model"]["model_name_or_path"]


def test_moved_flags_and_config_keys_name_their_new_place(tmp_path, capsys):
    with pytest.raises(SystemExit, match=r"--model.beta is now --model.loss.beta"):
        main(["fit", "--model.beta", "0.2"])
    with pytest.raises(SystemExit, match=r"--model.reference_mode is now --model.reference.mode"):
        main(["fit", "--model.reference_mode=none"])
    old = tmp_path / "old.yaml"
    old.write_text(yaml.safe_dump({"model": {"loss_type": "ipo", "sync_ref_model": True}}))
    with pytest.raises(
        SystemExit,
        match=r"model.loss_type is now model.loss.type[\s\S]*model.sync_ref_model is now model.reference.sync",
    ):
        main(["fit", "--config", str(old)])
    with pytest.raises(SystemExit, match=r"--model.padding_free is now --model.logps.padding_free"):
        main(["data", "--model.padding_free", "true"])
