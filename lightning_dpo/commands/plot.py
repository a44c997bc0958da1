"""``lightning-dpo plot RUN_DIR [--output FILE]``: a run's logged metrics as one PNG
(:mod:`lightning_dpo.tools.plotting`)."""

from __future__ import annotations

import argparse

from lightning_dpo.tools.plotting import PLOT_NAME, plot_run


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="lightning-dpo plot",
        description="Plot a run's logged metrics (metrics.csv or TensorBoard events) into one PNG. "
        "RUN_DIR is a run's log directory (lightning_logs/version_N), or a folder above runs (lightning_logs, or the "
        "trainer's default_root_dir that holds it): the newest run below it is plotted.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument(
        "--output", "-o", default=None, help=f"the PNG to write (default: {PLOT_NAME} in the run's directory)"
    )
    args = parser.parse_args(argv)
    print(f"wrote {plot_run(args.run_dir, args.output)}")
    return 0
