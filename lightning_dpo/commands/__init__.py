"""The ``lightning-dpo`` subcommands: each is a ``main(argv) -> exit code`` in a module of this package.

``COMMANDS`` names them; :mod:`lightning_dpo.cli` only dispatches, importing a command's module when it
runs. A new command is a new module here and one entry in ``COMMANDS``.
"""

from __future__ import annotations

from typing import NamedTuple


class Command(NamedTuple):
    entry: str
    """``module:function`` of its ``main(argv)``; ``argv`` holds the arguments after the command's name."""
    summary: str


COMMANDS: dict[str, Command] = {
    "fit": Command("lightning_dpo.commands.fit:fit", "train (a LightningCLI; the embedded default with no --config)"),
    "validate": Command("lightning_dpo.commands.fit:validate", "validate a model or checkpoint (LightningCLI)"),
    "test": Command("lightning_dpo.commands.fit:test", "test a model or checkpoint (LightningCLI)"),
    "predict": Command("lightning_dpo.commands.fit:predict", "score pairs: rewards, margins, log-probs (LightningCLI)"),
    "data": Command("lightning_dpo.commands.data:main", "a dry run of the data pipeline: its report"),
    "evaluate": Command("lightning_dpo.commands.evaluate:main", "the reward-KL frontier and win rates of models"),
    "generate": Command("lightning_dpo.commands.generate:main", "preference pairs from a model's own samples, scored"),
    "online": Command("lightning_dpo.commands.online:main", "online DPO: pairs sampled and scored every step"),
    "iterate": Command("lightning_dpo.commands.iterate:main", "iterative DPO: rounds of generate, fit, evaluate"),
    "plot": Command("lightning_dpo.commands.plot:main", "a run's logged metrics as one PNG"),
    "plan": Command("lightning_dpo.commands.plan:main", "will it fit? peak memory per device and FLOPs per step"),
}
