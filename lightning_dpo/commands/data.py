"""``lightning-dpo data``: a dry run of the data pipeline that prints what it would train on.

    lightning-dpo data [--config FILE] [--data.* ...] [--model.* ...] [--report FILE.json]

It parses the same arguments and config files as ``fit`` (so a run's config can be checked before the
run) and prints, per split: records read, kept and dropped by reason (with the first locations), token
length percentiles of prompts and completions, how many pairs truncation touched, the padding of shuffled
and of length-grouped batches, and one decoded pair with its prompt and completion boundaries marked.

It changes nothing: no model is loaded, nothing is trained, and the tokenised-data cache is read when it
holds the data but never written. ``--report FILE.json`` also writes the report as JSON (what
``lightning-dpo plan --data-report`` reads its length statistics from).
"""

from __future__ import annotations

import json
import sys

from lightning_dpo.commands.fit import DEFAULT_CONFIG, DPOCLI, has_config, refuse_renamed_keys
from lightning_dpo.data import PreferenceDataModule
from lightning_dpo.data.report import format_report
from lightning_dpo.data.sources import describe_dataset


class _ParseOnlyCLI(DPOCLI):
    """The LightningCLI's parser and config handling, without building a Trainer or a model."""

    def instantiate_classes(self) -> None:
        pass

    def _set_seed(self) -> None:  # a dry run seeds nothing
        pass


def main(argv: list[str]) -> int:
    """Parse ``fit``-style arguments, build the data module's splits without side effects, print the report."""
    argv, report_path = _pop_report(argv)
    if not has_config(argv):
        argv = ["--config", str(DEFAULT_CONFIG), *argv]
    refuse_renamed_keys(argv)
    command_line, sys.argv[1:] = sys.argv[1:], []  # LightningCLI warns about args= beside a command line
    try:
        config = _ParseOnlyCLI(args=argv, run=False).config
    finally:
        sys.argv[1:] = command_line
    data_args = config["data"].as_dict() if hasattr(config["data"], "as_dict") else dict(config["data"])
    if data_args.get("tokenizer_name_or_path") is None:
        data_args["tokenizer_name_or_path"] = config["model"]["model_name_or_path"]
    data = PreferenceDataModule(**data_args)
    report = data.dry_run()
    print(format_report(report, data.example(), source=describe_dataset(data_args["dataset"])))
    if report_path:
        with open(report_path, "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1, default=str)
    return 0


def _pop_report(argv: list[str]) -> tuple[list[str], str | None]:
    """``argv`` without ``--report FILE`` / ``--report=FILE``, and FILE (or ``None``)."""
    rest, path = [], None
    args = iter(argv)
    for arg in args:
        if arg == "--report":
            path = next(args, None)
            if path is None:
                raise SystemExit("lightning-dpo data: --report needs a file name")
        elif arg.startswith("--report="):
            path = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    return rest, path
