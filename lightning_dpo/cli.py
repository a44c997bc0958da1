"""The ``lightning-dpo`` command: it dispatches to the subcommands of :mod:`lightning_dpo.commands`.

lightning-dpo COMMAND [ARGS...]       (no COMMAND: ``fit`` on the embedded default)
"""

from __future__ import annotations

import pickle
import sys

from lightning_dpo.callbacks.checkpoint_io import refusal
from lightning_dpo.commands import COMMANDS
from lightning_dpo.errors import UserError
from lightning_dpo.namespace import submodule
from lightning_dpo.settings import import_object

SIGTERM_EXIT = 128 + 15
"""The exit status of a run that SIGTERM stopped (after it saved what ``PreemptionCheckpoint`` saves)."""


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; ``argv`` (without the program name) is for calls from Python."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        print("lightning-dpo: no command given; running `fit` on the embedded default (see --help)", file=sys.stderr)
        argv = ["fit"]
    name, rest = argv[0], argv[1:]
    if name in ("-h", "--help"):
        print(usage())
        return 0
    if name not in COMMANDS:
        print(f"lightning-dpo: unknown command {name!r}\n\n{usage()}", file=sys.stderr)
        return 2
    try:
        return import_object(COMMANDS[name].entry)(rest) or 0
    except UserError as e:  # a mistake in a file or a setting: its message says what to fix, a traceback would not
        print(f"lightning-dpo {name}: error: {e}", file=sys.stderr)
        return 1
    except pickle.UnpicklingError as e:  # torch.load(weights_only=True) met pickled code: a refusal, not a crash
        print(f"lightning-dpo {name}: error: {refusal(_checkpoint_argument(rest), e)}", file=sys.stderr)
        return 1
    except submodule("utilities.exceptions").SIGTERMException:
        print(f"lightning-dpo {name}: stopped by SIGTERM after the batch in progress", file=sys.stderr)
        return SIGTERM_EXIT


def _checkpoint_argument(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg.startswith("--ckpt_path="):
            return arg.split("=", 1)[1]
        if arg == "--ckpt_path" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [f"  {name:<{width}}  {command.summary}" for name, command in COMMANDS.items()]
    return "usage: lightning-dpo COMMAND [ARGS...]   (COMMAND --help for its options)\n\ncommands:\n" + "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
