"""Tests for scripts/build_tiny_model.py and the tiny SFT model it shipped."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / "scripts" / "build_tiny_model.py"
DATA_DIR = REPO_ROOT / "lightning_dpo" / "assets" / "data" / "polite"
SHIPPED = REPO_ROOT / "lightning_dpo" / "assets" / "models" / "tiny-polite-sft"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _first_val_prompt() -> str:
    with (DATA_DIR / "val.jsonl").open(encoding="utf-8") as f:
        return json.loads(f.readline())["prompt"]


@pytest.fixture(scope="module")
def two_builds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Build twice with the same arguments (concurrently, to keep the test fast)."""
    outs = [tmp_path_factory.mktemp(f"build{i}") for i in range(2)]
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(SCRIPT),
                "--data",
                str(DATA_DIR),
                "--out",
                str(out),
                "--steps",
                "2",
                "--max-train-records",
                "64",
                "--num-eval",
                "4",
            ],
            cwd=REPO_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for out in outs
    ]
    for proc in procs:
        output, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, output
    return outs[0], outs[1]


def test_build_is_deterministic(two_builds: tuple[Path, Path]) -> None:
    a, b = two_builds
    for name in ("model.safetensors", "tokenizer.json"):
        assert _sha256(a / name) == _sha256(b / name), name


def test_build_output_loads_offline(two_builds: tuple[Path, Path]) -> None:
    out = two_builds[0]
    model = AutoModelForCausalLM.from_pretrained(out, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(out, local_files_only=True)
    ids = tok("\n\nHuman: Hi\n\nAssistant:")["input_ids"]
    assert ids[0] == tok.bos_token_id and tok.eos_token_id not in ids
    assert model.config.vocab_size == len(tok)
    assert (out / "generation_config.json").is_file() and (out / "README.md").is_file()


def test_shipped_model_loads_and_generates() -> None:
    model = AutoModelForCausalLM.from_pretrained(SHIPPED, local_files_only=True)
    tok = AutoTokenizer.from_pretrained(SHIPPED, local_files_only=True)
    n_params = sum(p.numel() for p in model.parameters())
    assert 1_000_000 <= n_params <= 5_000_000
    assert next(model.parameters()).dtype == torch.float32

    enc = tok(_first_val_prompt(), return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, do_sample=False, max_new_tokens=48)
    completion = tok.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    assert completion.strip()


def test_shipped_model_card_matches_weights() -> None:
    # The model card records the weights' hash; a rebuild must update both together.
    card = (SHIPPED / "README.md").read_text(encoding="utf-8")
    assert _sha256(SHIPPED / "model.safetensors") in card


def test_make_polite_rankings_writes_the_bundled_files(load_script, tmp_path):
    from lightning_dpo.embedded import resolve_dataset

    load_script("scripts/make_polite_rankings.py").main(["--out", str(tmp_path)])
    bundled = resolve_dataset("embedded:polite-rankings")
    assert (tmp_path / "README.md").is_file()
    for name in ("train.jsonl", "val.jsonl"):
        assert (tmp_path / name).read_bytes() == (__import__("pathlib").Path(bundled) / name).read_bytes()
