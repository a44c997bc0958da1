"""``lightning-dpo evaluate MODEL [MODEL ...] [--options]``: the arguments are those of
:func:`lightning_dpo.tools.frontier.evaluate`, with their docstrings as help."""

from __future__ import annotations

from jsonargparse import ArgumentParser

from lightning_dpo.tools.frontier import evaluate


def build_parser() -> ArgumentParser:
    summary = (evaluate.__doc__ or "").split("\n\n    Args:")[0]
    parser = ArgumentParser(prog="lightning-dpo evaluate", description=" ".join(summary.split()))
    parser.add_argument(
        "models", nargs="+", help="Run directories, .ckpt files, HF model directories, Hub ids or embedded:<name>."
    )
    parser.add_function_arguments(evaluate, skip={"models"}, as_group=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    config = parser.parse_args(argv)
    evaluate(**config.as_dict())
    return 0
