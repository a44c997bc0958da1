"""The ``lightning-dpo`` command: a small dispatcher in front of a LightningCLI.

    lightning-dpo fit|validate|test|predict [--config FILE] [--model.* ...] [--data.* ...] [--trainer.* ...]

``fit``, ``validate``, ``test`` and ``predict`` are LightningCLI subcommands over ``DPOModule`` and
``PreferenceDataModule``. When no ``--config`` is given, the embedded tiny run (``configs/tiny.yaml``) is
the config, so ``lightning-dpo fit`` with no arguments trains the bundled default and
``lightning-dpo fit --model.beta 0.2`` changes one thing in it; a user's own ``--config`` replaces it
entirely (so a real-model config never inherits the tiny run's step budget). Other subcommands register
in ``EXTRA_COMMANDS``; each receives the remaining arguments.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Callable

from pytorch_lightning.cli import LightningCLI

from lightning_dpo.data import PreferenceDataModule
from lightning_dpo.module import DPOModule

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "tiny.yaml"
LIGHTNING_COMMANDS = ("fit", "validate", "test", "predict")

EXTRA_COMMANDS: dict[str, Callable[[list[str]], int | None]] = {}
"""Subcommands beside Lightning's, by name: a function of the remaining arguments returning an exit code."""


class DPOCLI(LightningCLI):
    """LightningCLI over DPOModule and PreferenceDataModule, defaulting to the embedded tiny run."""

    def __init__(self, args: list[str] | None = None, **kwargs) -> None:
        super().__init__(
            DPOModule,
            PreferenceDataModule,
            args=args,
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,  # DPOModule takes injectable optimizer / lr_scheduler callables
            **kwargs,
        )


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; ``argv`` (without the program name) is for calls from Python."""
    from_command_line = argv is None
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print("lightning-dpo: no subcommand given; running `fit` on the embedded default (see --help)", file=sys.stderr)
        argv = ["fit"]
    if argv[0] in EXTRA_COMMANDS:
        return EXTRA_COMMANDS[argv[0]](argv[1:]) or 0
    argv = with_default_config(argv)
    if from_command_line:
        sys.argv[1:] = argv  # LightningCLI warns when given args= beside a real command line
        DPOCLI()
    else:
        DPOCLI(args=argv)
    return 0


def with_default_config(argv: list[str]) -> list[str]:
    """Insert ``--config <tiny.yaml>`` after a Lightning subcommand that has no ``--config`` of its own.

    (Not jsonargparse's ``default_config_files``: with those, a YAML ``class_path`` for a callable such as
    ``model.optimizer`` is dropped, jsonargparse 4.53.)
    """
    if argv[0] not in LIGHTNING_COMMANDS or any(a in ("-c", "--config") or a.startswith("--config=") for a in argv):
        return argv
    return [argv[0], "--config", str(DEFAULT_CONFIG), *argv[1:]]


def _evaluate(argv: list[str]) -> int | None:
    """``lightning-dpo evaluate``: the reward–KL frontier and win rates (lightning_dpo.evaluation)."""
    from lightning_dpo.evaluation.cli import main as evaluate_main

    return evaluate_main(argv)


def _plot(argv: list[str]) -> int | None:
    """``lightning-dpo plot RUN_DIR``: a run's logged metrics as one PNG (lightning_dpo.plotting)."""
    from lightning_dpo.plotting import main as plot_main

    return plot_main(argv)


def _data(argv: list[str]) -> int | None:
    """``lightning-dpo data``: a dry run of the data pipeline that prints its report (lightning_dpo.data_report)."""
    from lightning_dpo.data_report import main as data_main

    return data_main(argv)


EXTRA_COMMANDS["evaluate"] = _evaluate
EXTRA_COMMANDS["plot"] = _plot
EXTRA_COMMANDS["data"] = _data


if __name__ == "__main__":
    sys.exit(main())
