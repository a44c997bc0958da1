"""Both Lightning namespaces: which one lightning_dpo builds on, and a user's own script in each (a fit with
the user's Trainer, callbacks and logger; a checkpoint round trip; DDP on 2 CPU processes); the CLI too."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lightning_dpo.namespace import ENV_VAR, choose_namespace

SCRIPT = Path(__file__).with_name("user_script.py")
NAMESPACES = ["pytorch_lightning", "lightning"]


def test_the_namespace_follows_the_setting_then_the_program():
    assert choose_namespace({}, set()) == "pytorch_lightning"
    assert choose_namespace({}, {"lightning", "lightning.pytorch"}) == "lightning"
    assert choose_namespace({}, {"lightning", "pytorch_lightning"}) == "pytorch_lightning"
    assert choose_namespace({ENV_VAR: "lightning"}, {"pytorch_lightning"}) == "lightning"
    with pytest.raises(ValueError, match="use one of"):
        choose_namespace({ENV_VAR: "lightning.pytorch"}, set())


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != ENV_VAR}
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH", "")])
    return env


def run_script(namespace, mode, tmp_path, tiny_model_dir, tiny_data_dir) -> dict:
    pytest.importorskip(namespace)
    out = tmp_path / f"{mode}.json"
    args = [sys.executable, str(SCRIPT), namespace, str(tiny_model_dir), str(tiny_data_dir), str(tmp_path), str(out)]
    result = subprocess.run([*args, mode], capture_output=True, text=True, timeout=600, env=_env())
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_a_users_fit_and_checkpoint_round_trip(namespace, tmp_path, tiny_model_dir, tiny_data_dir):
    facts = run_script(namespace, "fit", tmp_path, tiny_model_dir, tiny_data_dir)
    assert facts["chosen"] == namespace  # detected from the user's own import, with no setting
    assert facts["module_is_users"] and facts["data_is_users"] and facts["callbacks_are_users"]
    assert len(facts["losses"]) == 3 and facts["losses"][-1] < facts["losses"][0]
    assert facts["restored_equal"] and "val/rewards/accuracies" in facts["validated"]
    assert (tmp_path / "lightning_logs" / "version_0" / "hf_model" / "config.json").exists()  # HFExportCallback
    assert (tmp_path / "lightning_logs" / "version_0" / "margins.csv").exists()  # RewardMarginCallback


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_ddp_on_two_processes(namespace, tmp_path, tiny_model_dir, tiny_data_dir):
    facts = run_script(namespace, "ddp", tmp_path, tiny_model_dir, tiny_data_dir)
    assert facts["chosen"] == namespace and facts["world_size"] == 2 and len(facts["losses"]) == 2


@pytest.mark.parametrize("namespace", NAMESPACES)
def test_the_cli_in_either_namespace(namespace, tmp_path, tiny_model_dir, tiny_data_dir):
    """Class paths by short name (CSVLogger, ModelCheckpoint) resolve in whichever namespace runs."""
    pytest.importorskip(namespace)
    config = {
        "trainer": {
            "accelerator": "cpu", "max_steps": 2, "limit_val_batches": 1, "val_check_interval": 2,
            "enable_progress_bar": False, "enable_model_summary": False,
            "logger": {"class_path": "CSVLogger", "init_args": {"save_dir": str(tmp_path)}},
            "callbacks": [{"class_path": "ModelCheckpoint", "init_args": {"dirpath": str(tmp_path / "ckpt")}}],
        },
        "model": {"model_name_or_path": str(tiny_model_dir)},
        "data": {"dataset": str(tiny_data_dir), "batch_size": 4, "max_length": 96, "max_prompt_length": 48},
    }  # fmt: skip
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**_env(), ENV_VAR: namespace}
    command = [sys.executable, "-m", "lightning_dpo.cli", "fit", "--config", str(path)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-4000:]
    saved = yaml.safe_load((tmp_path / "lightning_logs" / "version_0" / "hparams.yaml").read_text())
    assert saved["_instantiator"].startswith(f"{'lightning.pytorch' if namespace == 'lightning' else namespace}.cli")
    assert list((tmp_path / "ckpt").glob("*.ckpt"))
