"""scripts/preferred_ft.py: the Preferred-FT baseline trains and leaves a run directory evaluate can read."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "preferred_ft.py"


def test_preferred_ft_writes_a_run_directory(tmp_path, tiny_model_dir, tiny_data_dir):
    subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--model",
            str(tiny_model_dir),
            "--dataset",
            str(tiny_data_dir),
            "--save_dir",
            str(tmp_path),
            "--max_steps",
            "2",
            "--steps_per_export",
            "1",
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    run = tmp_path / "preferred-ft" / "version_0"
    assert yaml.safe_load((run / "hparams.yaml").read_text())["model_name_or_path"] == str(tiny_model_dir)
    assert (run / "hf_model" / "step-1" / "model.safetensors").exists()
    assert (run / "hf_model" / "model.safetensors").exists()

    from lightning_dpo.tools.model_sources import expand_source

    sources = expand_source(str(run))  # step-1, step-2 (the final export repeats step-2: left out)
    assert [s.step for s in sources] == [1, 2] and {s.group for s in sources} == {"preferred-ft"}
    assert sources[0].reference == str(tiny_model_dir)
