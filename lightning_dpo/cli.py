"""The ``lightning-dpo`` command: it dispatches to the subcommands of :mod:`lightning_dpo.commands`.

lightning-dpo COMMAND [ARGS...]       (no COMMAND: ``fit`` on the embedded default)
"""

from __future__ import annotations

import sys

from lightning_dpo.commands import COMMANDS
from lightning_dpo.settings import import_object


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
    return import_object(COMMANDS[name].entry)(rest) or 0


def usage() -> str:
    width = max(len(name) for name in COMMANDS)
    lines = [f"  {name:<{width}}  {command.summary}" for name, command in COMMANDS.items()]
    return "usage: lightning-dpo COMMAND [ARGS...]   (COMMAND --help for its options)\n\ncommands:\n" + "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
