"""The non-finite guard on 2 CPU processes (gloo) with gradient accumulation: a NaN that only rank 1 sees
makes both ranks skip the same optimizer steps (``skip``), or both stop with one error that names rank 1's
pair (``raise``). Neither run may hang."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from common import SCRIPTS


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir, tiny_data_dir):
    started = {}
    for mode in ("skip", "raise"):
        folder = tmp_path_factory.mktemp(f"nonfinite-{mode}")
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SCRIPTS), os.environ.get("PYTHONPATH", "")])}
        log = open(folder / "log.txt", "w")
        args = [tiny_model_dir, tiny_data_dir, folder, folder / "out.json", mode]
        proc = subprocess.Popen(
            [sys.executable, str(SCRIPTS / "nonfinite_ddp.py"), *map(str, args)],
            cwd=folder,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        started[mode] = (proc, folder)
    results = {}
    for mode, (proc, folder) in started.items():
        assert proc.wait(timeout=400) == 0, (folder / "log.txt").read_text()[-6000:]
        results[mode] = [json.loads((folder / f"out.json.rank{r}").read_text()) for r in (0, 1)]
    return results


def test_both_ranks_skip_the_same_steps(runs):
    rank0, rank1 = runs["skip"]
    assert rank0["world_size"] == 2 and "error" not in rank0 and "error" not in rank1
    assert rank0["skipped"] == rank1["skipped"] == 2 and rank0["finite"] and rank1["finite"]
    assert len(rank1["poisoned"]) == 2 and rank0["poisoned"] == []  # only rank 1 saw a NaN
    assert rank0["checksums"] == rank1["checksums"]  # the ranks' weights never parted
    c = rank0["checksums"]  # before step 0, then after optimizer steps 0..4
    moved = [c[i + 1] != c[i] for i in range(5)]
    assert moved == [True, False, True, True, False]  # steps 1 and 4 skipped, both micro-batches of each


def test_both_ranks_stop_with_the_same_error_naming_rank_one_pair(runs):
    rank0, rank1 = runs["raise"]
    assert rank0["error"] == rank1["error"]
    assert "non-finite policy log-probs at optimizer step 1 (epoch 0)" in rank0["error"]
    (pair,) = rank1["poisoned"]
    assert pair in rank0["error"] and pair.split(":")[0].endswith(".jsonl")
    assert len(rank0["checksums"]) == 2 and rank0["checksums"] == rank1["checksums"]  # only step 0 was taken
