"""Summarise reward–KL frontiers over seeds, and check whether one method's frontier lies above another's.

Reads ``<root>/seed-*/evaluation/frontier.csv`` (from ``lightning-dpo evaluate``) and, where present,
``<root>/seed-*/best_of_n.csv`` (from ``scripts/best_of_n.py``). Prints, in markdown:

1. every method's points (a run's checkpoints, by step), reward and KL as mean ± sample std over seeds;
2. per seed, whether the DPO frontier lies above the Preferred-FT frontier at every KL they share.

A method's frontier is the piecewise-linear curve through its Pareto points (each point whose reward beats
every point of lower KL), starting at the SFT model (KL 0). Two such curves differ by a piecewise-linear
function, so their smallest gap over the shared KL range, (0, the smaller of their largest KLs], lies at
a vertex of one of them: the check evaluates exactly those.

    python scripts/onpolicy_frontier.py runs/onpolicy --above "DPO" --below "Preferred-FT"
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # run as a plain script from a checkout
    sys.path.insert(0, str(REPO_ROOT))

from lightning_dpo.tools.frontier import read_csv  # noqa: E402

Point = tuple[float, float]  # (KL, reward)


def pareto(points: Sequence[Point]) -> list[Point]:
    """The points, sorted by KL, that beat the reward of every point of lower KL."""
    out: list[Point] = []
    for kl, reward in sorted(points):
        if not out or reward > out[-1][1]:
            out.append((kl, reward))
    return out


def interpolate(curve: Sequence[Point], kl: float) -> float:
    """The frontier's reward at ``kl``: linear between its points, flat past the last one."""
    if kl <= curve[0][0]:
        return curve[0][1]
    for (k0, r0), (k1, r1) in zip(curve, curve[1:]):
        if kl <= k1:
            return r0 + (r1 - r0) * (kl - k0) / (k1 - k0) if k1 > k0 else max(r0, r1)
    return curve[-1][1]


def smallest_gap(above: Sequence[Point], below: Sequence[Point]) -> tuple[float, float, float]:
    """(min over the shared KL range of above(k) − below(k), at which k, the range's end)."""
    a, b = pareto(above), pareto(below)
    end = min(a[-1][0], b[-1][0])
    ks = sorted({k for k, _ in a + b if 0 < k <= end} | {end})
    gaps = [(interpolate(a, k) - interpolate(b, k), k) for k in ks]
    gap, at = min(gaps)
    return gap, at, end


def load(root: Path) -> dict[str, list[dict]]:
    """Rows by seed directory name."""
    out = {}
    for seed_dir in sorted(root.glob("seed-*")):
        rows = (
            read_csv(seed_dir / "evaluation" / "frontier.csv")
            if (seed_dir / "evaluation" / "frontier.csv").exists()
            else []
        )
        if (seed_dir / "best_of_n.csv").exists():
            rows += read_csv(seed_dir / "best_of_n.csv")
        out[seed_dir.name] = rows
    return out


def _ms(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.fmean(values):+.3f} ± {sd:.3f}"


def _mk(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{statistics.fmean(values):.2f} ± {sd:.2f}"


def summary_table(by_seed: dict[str, list[dict]]) -> str:
    """One line per (method, step): reward and KL, mean ± std over the seeds that have it."""
    cells: dict[tuple[str, float], list[dict]] = defaultdict(list)
    for rows in by_seed.values():
        for r in rows:
            cells[(r["group"], r["step"] if r["step"] is not None else -1.0)].append(r)
    lines = ["| method | step / N | seeds | reward (mean ± std) | KL nats (mean ± std) | tokens | EOS |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for (group, step), rows in sorted(cells.items()):
        tokens = [r["mean_tokens"] for r in rows if r.get("mean_tokens") is not None]
        eos = [r["eos_fraction"] for r in rows if r.get("eos_fraction") is not None]
        lines.append(
            f"| {group} | {'final' if step < 0 else int(step)} | {len(rows)} | "
            f"{_ms([r['reward_mean'] for r in rows])} | "
            f"{_mk([r['kl_mean'] for r in rows])} | {statistics.fmean(tokens) if tokens else float('nan'):.1f} | "
            f"{statistics.fmean(eos) if eos else float('nan'):.2f} |"
        )
    return "\n".join(lines)


def dominance_table(by_seed: dict[str, list[dict]], above: str, below: str, origin: str) -> str:
    lines = [
        f"| seed | smallest gap {above} − {below} | at KL | shared KL range | above everywhere |",
        "|---|---|---|---|---|",
    ]
    for seed, rows in by_seed.items():
        start = [(0.0, r["reward_mean"]) for r in rows if r["group"] == origin][:1]
        a = start + [(r["kl_mean"], r["reward_mean"]) for r in rows if r["group"].startswith(above)]
        b = start + [(r["kl_mean"], r["reward_mean"]) for r in rows if r["group"].startswith(below)]
        if len(a) < 2 or len(b) < 2:
            lines.append(f"| {seed} | (missing points) | | | |")
            continue
        gap, at, end = smallest_gap(a, b)
        lines.append(f"| {seed} | {gap:+.3f} | {at:.2f} | (0, {end:.2f}] | {'yes' if gap > 0 else 'NO'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", help="folder with seed-*/evaluation/frontier.csv")
    parser.add_argument("--above", default="DPO", help="group-name prefix of the method expected on top")
    parser.add_argument("--below", default="Preferred-FT", help="group-name prefix of the other method")
    parser.add_argument("--origin", default="SFT", help="group of the SFT model (the KL-0 point of both)")
    args = parser.parse_args(argv)
    by_seed = load(Path(args.root))
    print(summary_table(by_seed))
    print()
    print(dominance_table(by_seed, args.above, args.below, args.origin))


if __name__ == "__main__":
    main()
