"""The ``lightning-dpo`` dispatcher: bare command, help, unknown commands."""

from __future__ import annotations

import sys

import lightning_dpo.commands.fit as fit
from lightning_dpo.cli import main
from lightning_dpo.commands import COMMANDS


def test_no_arguments_at_all_runs_fit_on_the_default(monkeypatch):
    seen = {}
    monkeypatch.setattr(fit, "DPOCLI", lambda args=None: seen.setdefault("args", args))
    monkeypatch.setattr("sys.argv", ["lightning-dpo"])
    assert main([]) == 0
    assert seen["args"] is None and sys.argv[1:] == [
        "fit",
        "--config",
        str(fit.DEFAULT_CONFIG),
    ]  # so DDP's launcher repeats it


def test_help_lists_every_command(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(f"  {name} " in out for name in COMMANDS)


def test_an_unknown_command_is_refused_with_the_list(capsys):
    assert main(["fitt"]) == 2
    err = capsys.readouterr().err
    assert "unknown command 'fitt'" in err and "evaluate" in err
