"""``lightning-dpo fit|validate|test|predict``: a LightningCLI over ``DPOModule`` and ``PreferenceDataModule``.

    lightning-dpo fit [--config FILE] [--model.* ...] [--data.* ...] [--trainer.* ...]

When no ``--config`` is given, the embedded tiny run (``configs/tiny.yaml``) is the config, so
``lightning-dpo fit`` with no arguments trains the bundled default and ``lightning-dpo fit --model.loss.beta
0.2`` changes one thing in it; a user's own ``--config`` replaces it entirely (so a real-model config never
inherits the tiny run's step budget). A flag or config key of lightning_dpo 0.1 that moved into a settings
group (``--model.beta``) stops the command with its new place (``--model.loss.beta``).
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from lightning_dpo.data import PreferenceDataModule
from lightning_dpo.module import RENAMED_ARGUMENTS, DPOModule
from lightning_dpo.namespace import pl, submodule

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "tiny.yaml"
CONFIG_FLAGS = ("-c", "--config")


class DPOCLI(submodule("cli").LightningCLI):
    """LightningCLI over DPOModule and PreferenceDataModule, defaulting to the embedded tiny run.

    With ``data_classes`` (a ``data: {class_path: ...}`` in a config, or ``--data.class_path``), any
    LightningDataModule is accepted by class path, such as ``lightning_dpo.data.RankingDataModule`` for
    rankings or ``lightning_dpo.data.UnpairedDataModule`` for KTO.
    """

    def __init__(self, args: list[str] | None = None, data_classes: bool = False, **kwargs: Any) -> None:
        super().__init__(
            DPOModule,
            pl.LightningDataModule if data_classes else PreferenceDataModule,
            subclass_mode_data=data_classes,
            args=args,
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,  # DPOModule takes injectable optimizer / lr_scheduler callables
            **kwargs,
        )

    def _prepare_subcommand_kwargs(self, subcommand: str) -> dict[str, Any]:
        """``--ckpt_path`` loads with ``weights_only=True`` unless ``--weights_only false`` says otherwise: a
        checkpoint that carries pickled code is refused, whatever torch's own default (False before 2.6)."""
        kwargs = super()._prepare_subcommand_kwargs(subcommand)
        if "weights_only" in self._subcommand_method_arguments[subcommand] and kwargs.get("weights_only") is None:
            kwargs["weights_only"] = True
        return kwargs


def fit(argv: list[str]) -> int:
    return run("fit", argv)


def validate(argv: list[str]) -> int:
    return run("validate", argv)


def test(argv: list[str]) -> int:
    return run("test", argv)


def predict(argv: list[str]) -> int:
    return run("predict", argv)


def run(subcommand: str, argv: list[str]) -> int:
    """Run a LightningCLI subcommand. From the console script, ``sys.argv`` is set to the full command line
    (default config included), so that DDP's launcher starts the other ranks with the same command."""
    command_line = [subcommand, *argv]
    from_console = sys.argv[1:] in (command_line, [])
    args = with_default_config(command_line)
    refuse_renamed_keys(args)
    extra = {"data_classes": True} if names_data_class(args) else {}
    if from_console:
        sys.argv[1:] = args  # LightningCLI warns when given args= beside a real command line
        DPOCLI(**extra)
    else:
        DPOCLI(args=args, **extra)
    return 0


def names_data_class(argv: list[str]) -> bool:
    """Whether the command line or one of its configs picks the data module by ``class_path``."""
    if any(a.startswith(("--data.class_path", "--data=")) for a in argv):
        return True
    return any(
        isinstance((_read_yaml(path).get("data") or {}), dict) and "class_path" in _read_yaml(path)["data"]
        for path in _config_files(argv)
    )


def has_config(argv: list[str]) -> bool:
    return any(a in CONFIG_FLAGS or a.startswith("--config=") for a in argv)


def with_default_config(argv: list[str]) -> list[str]:
    """Insert ``--config <tiny.yaml>`` after the subcommand when ``argv`` has no ``--config`` of its own.

    (Not jsonargparse's ``default_config_files``: with those, a YAML ``class_path`` for a callable such as
    ``model.optimizer`` is dropped, jsonargparse 4.53.)
    """
    if has_config(argv):
        return argv
    return [argv[0], "--config", str(DEFAULT_CONFIG), *argv[1:]]


def refuse_renamed_keys(argv: list[str]) -> None:
    """Exit with the new place of every ``--model.<old>`` flag and ``model: {<old>: ...}`` config key."""
    problems = [f"--model.{old} is now --model.{RENAMED_ARGUMENTS[old]}" for old in _model_flags(argv)]
    for path in _config_files(argv):
        model = _read_yaml(path).get("model") or {}
        for old in sorted(set(model if isinstance(model, dict) else ()) & set(RENAMED_ARGUMENTS)):
            problems.append(f"{path}: model.{old} is now model.{RENAMED_ARGUMENTS[old]}")
    if problems:
        raise SystemExit("lightning-dpo: settings moved into groups:\n  " + "\n  ".join(problems))


def _model_flags(argv: list[str]) -> Iterator[str]:
    for arg in argv:
        if arg.startswith("--model."):
            name = arg[len("--model.") :].split("=", 1)[0]
            if name in RENAMED_ARGUMENTS:
                yield name


def _config_files(argv: list[str]) -> Iterator[str]:
    for i, arg in enumerate(argv):
        if arg in CONFIG_FLAGS and i + 1 < len(argv):
            yield argv[i + 1]
        elif arg.startswith("--config="):
            yield arg.split("=", 1)[1]


def _read_yaml(path: str) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return {}  # the CLI itself reports unreadable configs
    return data if isinstance(data, dict) else {}
