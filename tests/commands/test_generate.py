"""``lightning-dpo generate``: the command on an embedded model and a run directory, a run killed with SIGKILL
and resumed on 2 DDP processes giving the uninterrupted single-process file byte for byte, and an ``hf:``
reward model."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lightning_dpo.commands.generate import main
from lightning_dpo.embedded import DEFAULT_MODEL

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
ARGS = [
    "--reward",
    "killing_reward.reward",
    "--num_prompts",
    "8",
    "--samples_per_prompt",
    "2",
    "--batch_size",
    "2",
    "--sampling.max_new_tokens",
    "24",
    "--accelerator",
    "cpu",
    "--progress",
    "false",
]


if str(HERE.parent / "onpolicy") not in sys.path:  # killing_reward, by its dotted path, in this process too
    sys.path.insert(0, str(HERE.parent / "onpolicy"))


def command(model: str, output: Path, *extra: str, env: dict | None = None) -> subprocess.CompletedProcess:
    paths = [str(HERE.parent / "onpolicy"), str(REPO), os.environ.get("PYTHONPATH", "")]
    full_env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p), **(env or {})}
    return subprocess.run(  # -m, so that Lightning's DDP launcher can start the second process the same way
        [sys.executable, "-m", "lightning_dpo.cli", "generate", model, "--output", str(output), *ARGS, *extra],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def samples(output: Path) -> list[dict]:
    with gzip.open(f"{output}.samples.jsonl.gz", "rt") as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def whole(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("whole") / "pairs.jsonl"
    assert main([DEFAULT_MODEL, "--output", str(out), *ARGS]) == 0
    return out


def test_the_command_writes_pairs_with_their_settings(whole):
    records = [json.loads(line) for line in whole.read_text().splitlines()]
    meta = yaml.safe_load(Path(f"{whole}.meta.yaml").read_text())
    assert len(records) == meta["counts"]["pairs"] > 0
    assert meta["settings"]["samples_per_prompt"] == 2 and meta["settings"]["sampling"]["max_new_tokens"] == 24
    assert meta["settings"]["scoring"]["reward"] == "killing_reward.reward"
    assert meta["throughput"]["prompts"] == 8 and meta["throughput"]["prompts_per_s"] > 0
    assert all(r["chosen_score"] > r["rejected_score"] for r in records)


def test_a_run_directory_samples_its_final_export(whole, tmp_path, embedded_model_dir):
    run = tmp_path / "version_0"
    shutil.copytree(embedded_model_dir, run / "hf_model")
    out = tmp_path / "pairs.jsonl"
    assert main([str(run), "--output", str(out), *ARGS]) == 0
    assert samples(out) == samples(whole)  # the same weights and seeds: the same samples
    with pytest.raises(SystemExit, match="checkpoint"):
        (tmp_path / "last.ckpt").write_bytes(b"")
        main([str(tmp_path / "last.ckpt"), "--output", str(out), *ARGS])


def test_a_killed_run_resumed_on_two_ddp_processes_equals_an_uninterrupted_one(whole, tmp_path):
    out = tmp_path / "pairs.jsonl"
    killed = command(DEFAULT_MODEL, out, env={"KILL_AFTER": "2"})
    assert killed.returncode == -9, killed.stderr[-2000:]
    parts = list(Path(f"{out}.parts").glob("*.part"))
    done = sum(len(p.read_bytes().splitlines()) for p in parts)
    assert done == 4 and not out.exists()  # two batches of two prompts were on disk before the kill

    resumed = command(DEFAULT_MODEL, out, "--devices", "2", "--strategy", "ddp")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "4 of 8 prompts already done" in resumed.stdout
    assert out.read_bytes() == whole.read_bytes()
    assert samples(out) == samples(whole)
    meta = yaml.safe_load(Path(f"{out}.meta.yaml").read_text())
    assert meta["throughput"]["devices"] == 2 and meta["throughput"]["prompts"] == 4
    assert not Path(f"{out}.parts").exists()


def test_an_hf_reward_model_scores_the_samples(tmp_path, tiny_reward_model_dir):
    out = tmp_path / "pairs.parquet"
    args = [a if a != "killing_reward.reward" else f"hf:{tiny_reward_model_dir}" for a in ARGS]
    assert main([DEFAULT_MODEL, "--output", str(out), *args]) == 0
    import datasets

    rows = datasets.Dataset.from_parquet(str(out)).to_list()
    scores = [s["score"] for g in samples(out) for s in g["samples"]]
    assert len(set(scores)) > 8  # a random reward model gives real-valued, distinct scores
    assert rows and all(r["chosen_score"] > r["rejected_score"] for r in rows)


def test_the_bundled_generate_config_parses():
    from lightning_dpo.commands.generate import build_parser

    config = build_parser().parse_args([DEFAULT_MODEL, "--config", str(REPO / "configs/onpolicy/generate-polite.yaml")])
    assert config.samples_per_prompt == 4 and config.pairs.rule == "best_vs_worst"
    assert config.reward == "lightning_dpo.tasks.politeness.politeness_reward"
