"""Interruptions at every point: a fit killed (SIGKILL) or preempted (SIGTERM, SLURM's SIGUSR1 + SIGTERM) in
its own process resumes from what it left and repeats the uninterrupted run's losses exactly.

Every interrupted run is ``tests/interrupted_fit.py`` in a subprocess; they all start together (a module
fixture), and the uninterrupted and resumed runs run here, in-process, with the same settings.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent / "interrupted_fit.py"
SLURM = {
    "SLURM_NTASKS": "1",
    "SLURM_JOB_ID": "4242",
    "SLURM_JOB_NAME": "dpo",
    "SLURM_PROCID": "0",
    "SLURM_LOCALID": "0",
    "SLURM_NODEID": "0",
}


class Run:
    """``interrupted_fit.py`` in a subprocess; ``send`` delivers a signal once the run printed ``step N``."""

    def __init__(self, root: Path, model_dir, data_dir, event: str, env: dict | None = None, send=()) -> None:
        self.root, self.lines, self.send = root, [], list(send)
        self.proc = subprocess.Popen(
            [sys.executable, str(SCRIPT), str(model_dir), str(data_dir), str(root), event],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, **(env or {})},
        )
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            while self.send and line.strip() == f"step {self.send[0][0]}":
                _, signum, wait_for = self.send.pop(0)
                self.proc.send_signal(signum)
                if wait_for is not None:  # e.g. the requeue checkpoint, before the next signal
                    threading.Thread(target=self._after, args=(wait_for,), daemon=True).start()

    def _after(self, wait_for) -> None:
        path, signum = wait_for
        for _ in range(6000):
            if path.exists():
                break
            threading.Event().wait(0.05)
        self.proc.send_signal(signum)

    def wait(self) -> int:
        code = self.proc.wait(timeout=400)
        self.reader.join(10)
        return code

    def log(self) -> str:
        return "".join(self.lines)[-6000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model_dir, tiny_data_dir):
    def start(event, **kwargs):
        return Run(tmp_path_factory.mktemp(event), tiny_model_dir, tiny_data_dir, event.split(":")[0], **kwargs)

    slurm_root = tmp_path_factory.mktemp("slurm")
    started = {
        "kill-train": start("kill-train"),
        "kill-write": start("kill-write"),
        "term-val": start("term-val"),
        "term": start("wait:term", send=[(3, signal.SIGTERM, None)]),
        "slurm": Run(
            slurm_root,
            tiny_model_dir,
            tiny_data_dir,
            "wait",
            env=SLURM,
            # SLURM's notice (--signal=SIGUSR1@90): Lightning saves hpc_ckpt_1.ckpt and requeues; then the kill
            # warning, SIGTERM.
            send=[(3, signal.SIGUSR1, (slurm_root / "hpc_ckpt_1.ckpt", signal.SIGTERM))],
        ),
    }
    yield started
    for run in started.values():
        if run.proc.poll() is None:
            run.proc.kill()


@pytest.fixture(scope="module")
def fit(load_script_module):
    return load_script_module.fit


@pytest.fixture(scope="module")
def load_script_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("interrupted_fit", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def uninterrupted(fit, tmp_path_factory, tiny_model_dir, tiny_data_dir):
    return fit(tiny_model_dir, tiny_data_dir, tmp_path_factory.mktemp("straight")).losses


def _step_of(path: Path) -> int:
    return torch.load(path, map_location="cpu", weights_only=True)["global_step"]


def _resume(fit, run, tiny_model_dir, tiny_data_dir, **kwargs):
    return fit(tiny_model_dir, tiny_data_dir, run.root, ckpt_path=kwargs.pop("ckpt_path", "last"), **kwargs).losses


def test_sigkill_between_checkpoints_resumes_exactly_from_the_last(
    runs, fit, uninterrupted, tiny_model_dir, tiny_data_dir
):
    run = runs["kill-train"]
    assert run.wait() == -signal.SIGKILL, run.log()
    assert _step_of(run.root / "ckpt" / "last.ckpt") == 4  # killed after step 5
    resumed = _resume(fit, run, tiny_model_dir, tiny_data_dir)
    assert resumed == pytest.approx(uninterrupted[4:], abs=1e-6)


def test_sigkill_while_writing_a_checkpoint_leaves_the_previous_one(
    runs, fit, uninterrupted, tiny_model_dir, tiny_data_dir
):
    run = runs["kill-write"]
    assert run.wait() == -signal.SIGKILL, run.log()
    folder = run.root / "ckpt"
    (half,) = folder.glob(".last.ckpt.*.tmp")  # the write that was killed: a hidden temporary, never the file
    assert 0 < half.stat().st_size < (folder / "epoch=0-step=4.ckpt").stat().st_size
    assert _step_of(folder / "last.ckpt") == 2  # the previous last.ckpt, whole
    assert _resume(fit, run, tiny_model_dir, tiny_data_dir) == pytest.approx(uninterrupted[2:], abs=1e-6)


@pytest.mark.parametrize("event", ["term", "term-val"])
def test_sigterm_leaves_a_checkpoint_that_resumes_exactly(
    runs, event, fit, uninterrupted, tiny_model_dir, tiny_data_dir
):
    run = runs[event]
    assert run.wait() == 0, run.log()  # Lightning stops by SystemExit after the batch in progress
    assert "finished" not in run.log()
    preempted = run.root / "ckpt" / "preempted.ckpt"
    step = _step_of(preempted)
    assert 3 <= step < 8 and (event != "term-val" or step == 6)
    resumed = _resume(fit, run, tiny_model_dir, tiny_data_dir)  # "last": the newest, the preemption's
    assert resumed == pytest.approx(uninterrupted[step:], abs=1e-6)
    assert not preempted.exists()  # the resumed run finished: the stale file is gone


def test_slurm_requeue_then_sigterm_resumes_exactly(
    runs, fit, load_script_module, uninterrupted, tiny_model_dir, tiny_data_dir, monkeypatch
):
    run = runs["slurm"]
    assert run.wait() == 0, run.log()
    hpc, preempted = run.root / "hpc_ckpt_1.ckpt", run.root / "ckpt" / "preempted.ckpt"
    assert "requeu" in run.log().lower() and hpc.exists() and preempted.exists()
    # The requeued job: the same command under SLURM; Lightning resumes from the requeue checkpoint by itself.
    for name, value in SLURM.items():
        monkeypatch.setenv(name, value)
    progress = torch.load(hpc, weights_only=True)["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]
    assert progress["ready"] == progress["processed"]  # saved at a batch's end, not inside one (the handler's moment)
    environment = load_script_module.submodule("plugins.environments").SLURMEnvironment(auto_requeue=True)
    step = _step_of(hpc)
    resumed = _resume(fit, run, tiny_model_dir, tiny_data_dir, ckpt_path=None, environment=environment)
    assert resumed == pytest.approx(uninterrupted[step:], abs=1e-6)


def test_the_command_exits_143_when_sigterm_stopped_it(monkeypatch, capsys):
    import lightning_dpo.commands.fit as fit_command
    from lightning_dpo.cli import SIGTERM_EXIT, main
    from lightning_dpo.namespace import submodule

    def preempted(argv):
        raise submodule("utilities.exceptions").SIGTERMException()  # what Lightning raises after the batch

    monkeypatch.setattr(fit_command, "fit", preempted)
    assert main(["fit"]) == SIGTERM_EXIT == 143
    assert "stopped by SIGTERM" in capsys.readouterr().err
