"""``lightning-dpo online [fit|validate] [--config FILE] [--flags]``: online DPO through LightningCLI.

The module is :class:`~lightning_dpo.onpolicy.online.OnlineDPOModule` (every ``DPOModule`` flag, plus
``--model.scoring.reward``, ``--model.sampling.*``, ``--model.samples_per_prompt``, ``--model.pairs.*``,
``--model.missing_eos_penalty``) and the data module
:class:`~lightning_dpo.data.prompt_datamodule.PromptDataModule` (``--data.dataset``, ``--data.batch_size``, ...).
Without a subcommand it fits. Without ``--config`` it uses ``configs/onpolicy/online-polite.yaml`` (packaged).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from lightning_dpo.commands.fit import has_config
from lightning_dpo.data.prompt_datamodule import PromptDataModule
from lightning_dpo.namespace import submodule
from lightning_dpo.onpolicy.online import OnlineDPOModule

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "online-polite.yaml"
SUBCOMMANDS = ("fit", "validate")


class OnlineCLI(submodule("cli").LightningCLI):
    """LightningCLI over OnlineDPOModule and PromptDataModule."""

    def __init__(self, args: list[str] | None = None, **kwargs: Any) -> None:
        super().__init__(
            OnlineDPOModule,
            PromptDataModule,
            args=args,
            save_config_kwargs={"overwrite": True},
            auto_configure_optimizers=False,
            **kwargs,
        )


def command_line(argv: list[str]) -> list[str]:
    """``argv`` with its subcommand (``fit`` when none) and the default config when it has none."""
    args = list(argv) if argv and argv[0] in SUBCOMMANDS else ["fit", *argv]
    if not has_config(args):
        args = [args[0], "--config", str(DEFAULT_CONFIG), *args[1:]]
    return args


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[2:] if argv is None else argv)
    args = command_line(argv)
    if sys.argv[1:2] == ["online"] and sys.argv[2:] == argv:  # from the console: DDP's launcher reruns sys.argv
        sys.argv[2:] = args
    OnlineCLI(args=args)
    return 0
