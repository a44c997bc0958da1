"""Soak test: the embedded default (configs/tiny.yaml) for 2,000 optimizer steps, with its validation every 25
steps and ``GenerationSamples`` at every validation, sampling the process's resident memory as it goes.

    python benchmarks/soak.py [--steps 2000] [--every 50] [--warmup 200] [--out soak]

Not a test (about 40 minutes on 2 CPU cores): run it before a release, or after a change to the training
loop, the data loader, the callbacks or the logging. It passes when resident memory after warm-up grows by at
most 5%: ``(max RSS after --warmup) / (RSS at --warmup) - 1 <= 0.05``. It writes ``OUT/rss.csv`` (step, RSS in
MiB, seconds since the start) and prints the curve every 100 steps and the verdict; the run's own logs,
samples and export go to ``OUT/`` as well.
"""

from __future__ import annotations

import argparse
import csv
import gc
import os
import sys
import time
from pathlib import Path


def rss_mib() -> float:
    """This process's resident set size, MiB (``/proc``: no dependency)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--every", type=int, default=50, help="sample RSS every N steps")
    parser.add_argument("--warmup", type=int, default=200, help="RSS at this step is the baseline")
    parser.add_argument("--limit", type=float, default=0.05, help="allowed growth after warm-up")
    parser.add_argument("--out", default="soak")
    args = parser.parse_args(argv)

    from lightning_dpo import GenerationSamples
    from lightning_dpo.commands.fit import DEFAULT_CONFIG, DPOCLI
    from lightning_dpo.namespace import pl

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.chdir(out)  # the config's logger, checkpoints and export write below here
    samples: list[tuple[int, float, float]] = []
    start = time.perf_counter()

    class Memory(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            step = trainer.global_step
            if step % args.every == 0 or step == args.warmup:
                samples.append((step, rss_mib(), time.perf_counter() - start))
                if step % 100 == 0:
                    print(f"step {step:5d}  rss {samples[-1][1]:8.1f} MiB  {samples[-1][2]:7.0f} s", flush=True)

    cli = DPOCLI(
        args=[
            "--config",
            str(DEFAULT_CONFIG),
            "--trainer.max_steps",
            str(args.steps),
            "--trainer.max_epochs",
            "-1",
            "--trainer.enable_progress_bar",
            "false",
        ],
        run=False,
    )
    cli.trainer.callbacks.extend([GenerationSamples(), Memory()])
    gc.collect()
    cli.trainer.fit(cli.model, cli.datamodule)

    with open(out / "rss.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "rss_mib", "seconds"])
        writer.writerows((s, f"{r:.1f}", f"{t:.1f}") for s, r, t in samples)
    baseline = next(r for s, r, _ in samples if s == args.warmup)
    after = [r for s, r, _ in samples if s >= args.warmup]
    growth = max(after) / baseline - 1
    final = after[-1] / baseline - 1
    print(
        f"\nRSS at step {args.warmup}: {baseline:.1f} MiB; max after it {max(after):.1f} MiB ({growth:+.2%}); "
        f"at step {samples[-1][0]}: {after[-1]:.1f} MiB ({final:+.2%}); limit {args.limit:+.0%}: "
        f"{'PASS' if growth <= args.limit else 'FAIL'}"
    )
    return 0 if growth <= args.limit else 1


if __name__ == "__main__":
    sys.exit(main())
