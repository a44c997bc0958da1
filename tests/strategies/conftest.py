"""The strategy tests import ``scripts/common.py`` (runs from configs, probes), shared with the multi-process
scripts. Those scripts run in their own processes (Lightning's launchers re-execute ``sys.argv``, so a
multi-process run never starts inside pytest). They take most of this directory's time, so the ones the
selected tests need all start together, in the background, when the first test here starts."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent / "scripts"
sys.path.insert(0, str(SCRIPTS))  # common.py: the probes, shared with the scripts

from common import CONFIGS  # noqa: E402

SCRIPT_OF_MODULE = {
    "test_ddp.py": "ddp_fit.py",
    "test_fsdp2.py": "fsdp2_fit.py",
    "test_deepspeed.py": "deepspeed_check.py",
}


class ScriptRuns:
    """Scripts started at once, each writing ``out.json`` in its own folder; ``result`` waits for one."""

    def __init__(self, root: Path, model_dir: Path, data_dir: Path) -> None:
        self.root, self.model_dir, self.data_dir = root, model_dir, data_dir
        self.procs: dict[str, tuple[subprocess.Popen, Path]] = {}

    def start(self, script: str) -> None:
        folder = self.root / Path(script).stem
        folder.mkdir()
        first = [CONFIGS] if script == "deepspeed_check.py" else []
        second = [] if script == "deepspeed_check.py" else [folder]
        args = [*first, self.model_dir, self.data_dir, *second, folder / "out.json"]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SCRIPTS), os.environ.get("PYTHONPATH", "")])}
        log = open(folder / "log.txt", "w")  # a file, not a pipe: a full pipe would stall the script
        proc = subprocess.Popen(
            [sys.executable, str(SCRIPTS / script), *map(str, args)],
            cwd=folder,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        self.procs[script] = (proc, folder)

    def result(self, script: str, timeout: float = 300) -> dict:
        if script not in self.procs:
            self.start(script)
        proc, folder = self.procs[script]
        returncode = proc.wait(timeout=timeout)
        assert returncode == 0, (folder / "log.txt").read_text()[-8000:]
        return json.loads((folder / "out.json").read_text())

    def stop(self) -> None:
        for proc, _ in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()


@pytest.fixture(scope="session", autouse=True)
def script_runs(request, tmp_path_factory, tiny_model_dir, tiny_data_dir):
    runs = ScriptRuns(tmp_path_factory.mktemp("scripts"), tiny_model_dir, tiny_data_dir)
    # Under pytest-xdist a worker runs only some of the collected modules, so it starts a script when a test
    # first asks for it (``ScriptRuns.result``); in one process they all start now, beside the other tests.
    selected = set() if os.environ.get("PYTEST_XDIST_WORKER") else {Path(i.path).name for i in request.session.items}
    for module, script in SCRIPT_OF_MODULE.items():
        if module in selected and (script != "deepspeed_check.py" or importlib.util.find_spec("deepspeed")):
            runs.start(script)
    yield runs
    runs.stop()


@pytest.fixture
def restore_rank_zero():
    """Building a Trainer under an emulated cluster sets Lightning's process-wide rank; put it back."""
    from lightning_utilities.core.rank_zero import rank_zero_only as utils_rank_zero_only

    from lightning_dpo.namespace import pl

    saved = pl.utilities.rank_zero.rank_zero_only.rank, utils_rank_zero_only.rank, dict(os.environ)
    yield
    pl.utilities.rank_zero.rank_zero_only.rank, utils_rank_zero_only.rank = saved[0], saved[1]
    os.environ.clear()
    os.environ.update(saved[2])
