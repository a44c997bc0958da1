"""Pictures of a run and of a reward–KL frontier (``lightning-dpo plot RUN_DIR``).

matplotlib is optional (``pip install 'lightning-dpo[plot]'``) and imported only here, when a plot is made.
Figures are drawn on matplotlib's Agg canvas directly, without pyplot: no display is needed and the
caller's global backend is left alone.
"""

from __future__ import annotations

import csv
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

Series = tuple[list[float], list[float]]
"""(steps, values)."""

PLOT_NAME = "metrics.png"


def require_matplotlib() -> Any:
    """Import matplotlib, or fail with the command that installs it."""
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg  # noqa: F401
        from matplotlib.figure import Figure  # noqa: F401
    except ImportError as e:
        raise ImportError(
            "plots need matplotlib, which is not installed: pip install 'lightning-dpo[plot]' "
            "(or pip install matplotlib)"
        ) from e
    return matplotlib


def _figure(width: float, height: float) -> Any:
    require_matplotlib()
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=90, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


# -- reading logged metrics ------------------------------------------------------------------------------


def find_run_dir(path: str | Path) -> Path:
    """``path`` itself when it holds metrics; else the newest run below it (up to three levels: a
    ``lightning_logs`` folder, or the ``default_root_dir`` that holds it, or a folder of logger names): the
    highest ``version_N``, and among equal versions the most recently written metrics."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"run directory {str(path)!r} does not exist")
    if _has_metrics(path):
        return path
    runs = [p for p in _folders_below(path, depth=3) if _has_metrics(p)]
    if runs:
        return max(runs, key=_run_order)
    raise FileNotFoundError(
        f"no metrics in or below {str(path)!r}: expected a metrics.csv (CSVLogger) or events.out.tfevents.* files "
        "(TensorBoardLogger), e.g. in lightning_logs/version_0"
    )


def _folders_below(path: Path, depth: int) -> list[Path]:
    """Every folder under ``path`` down to ``depth`` levels (hidden ones, exports and checkpoints skipped)."""
    found, level = [], [path]
    for _ in range(depth):
        level = [
            child
            for folder in level
            for child in sorted(folder.iterdir())
            if child.is_dir() and not child.name.startswith(".") and child.name not in ("hf_model", "checkpoints")
        ]
        found += level
    return found


def _run_order(run: Path) -> tuple[int, float]:
    version = re.fullmatch(r"version_(\d+)", run.name)
    files = [run / "metrics.csv"] if (run / "metrics.csv").is_file() else list(run.glob("events.out.tfevents.*"))
    return (int(version.group(1)) if version else -1, max(f.stat().st_mtime for f in files))


def _has_metrics(path: Path) -> bool:
    return (path / "metrics.csv").is_file() or any(path.glob("events.out.tfevents.*"))


def read_metrics(run_dir: str | Path) -> dict[str, Series]:
    """Every logged scalar of a run: ``{name: (steps, values)}``, from ``metrics.csv`` when there is one,
    else from TensorBoard event files. ``name_step`` columns (a metric logged per step and per epoch) are
    read as ``name``."""
    run_dir = Path(run_dir)
    if (run_dir / "metrics.csv").is_file():
        series = read_metrics_csv(run_dir / "metrics.csv")
    else:
        series = read_metrics_tensorboard(run_dir)
    for name in [n for n in series if n.endswith("_step")]:
        series.setdefault(name[: -len("_step")], series[name])
    return series


def read_metrics_csv(path: str | Path) -> dict[str, Series]:
    """CSVLogger's ``metrics.csv``: one sparse row per logging call, a ``step`` column and one per metric."""
    series: dict[str, Series] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            step = _float(row.get("step"))
            if step is None:
                continue
            for name, value in row.items():
                v = _float(value)
                if name in ("step", "epoch") or v is None:
                    continue
                steps, values = series.setdefault(name, ([], []))
                steps.append(step)
                values.append(v)
    return series


def read_metrics_tensorboard(run_dir: str | Path) -> dict[str, Series]:
    """Scalars of the TensorBoard event files in ``run_dir`` (needs the ``tensorboard`` package)."""
    try:
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    except ImportError as e:
        raise ImportError(
            f"{str(run_dir)!r} has only TensorBoard event files, and reading them needs tensorboard: "
            "pip install tensorboard"
        ) from e
    series: dict[str, Series] = {}
    for events in sorted(Path(run_dir).glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            steps, values = series.setdefault(tag, ([], []))
            for event in acc.Scalars(tag):
                steps.append(float(event.step))
                values.append(float(event.value))
    return series


def _float(text: Any) -> float | None:
    if text is None or text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


# -- the run plot ----------------------------------------------------------------------------------------


def plot_run(run_dir: str | Path, output: str | Path | None = None) -> Path:
    """One PNG of a run's logged metrics: rewards (chosen, rejected), margins with the p10–p90 band of
    ``RewardMarginCallback``, reward accuracy, loss, learning rate and completion log-probs; train as lines,
    validation as markers. Returns the path written (default ``RUN_DIR/metrics.png``)."""
    run_dir = find_run_dir(run_dir)
    series = read_metrics(run_dir)
    if not any(k.startswith(("train/", "val/")) for k in series):
        raise ValueError(f"{str(run_dir)!r} logged no train/ or val/ metrics; nothing to plot")
    fig = _figure(15, 8.5)
    axes = fig.subplots(2, 3).flatten()

    ax = axes[0]
    for name, colour in (("chosen", "tab:green"), ("rejected", "tab:red")):
        _train_val(ax, series, f"rewards/{name}", name, colour)
    _finish(ax, "implicit rewards β·log(πθ/πref)", "reward")

    ax = axes[1]
    _band(ax, series, "tab:blue", "train p10–p90")
    _train_val(ax, series, "rewards/margins", "mean", "tab:blue")
    _val_range(ax, series, "tab:orange", "val p10–p90")
    _line(ax, series, "train/margins/p50", "train median", "tab:blue", linestyle="--", linewidth=0.8)
    _finish(ax, "reward margins (chosen − rejected)", "margin")

    ax = axes[2]
    _train_val(ax, series, "rewards/accuracies", "accuracy", "tab:purple")
    ax.set_ylim(-0.02, 1.02)
    _finish(ax, "reward accuracy", "share of pairs")

    ax = axes[3]
    _train_val(ax, series, "loss", "loss", "tab:gray")
    _finish(ax, "loss", "loss")

    ax = axes[4]
    lr_names = sorted(n for n in series if n.startswith("lr-") or n in ("lr", "learning_rate", "train/learning_rate"))
    for name in lr_names:
        _line(ax, series, name, name, None)
    if not lr_names:
        ax.text(
            0.5,
            0.5,
            "no learning rate logged",
            ha="center",
            va="center",
            transform=ax.transAxes,
        )
    _finish(ax, "learning rate", "lr")

    ax = axes[5]
    for name, colour in (("chosen", "tab:green"), ("rejected", "tab:red")):
        _train_val(ax, series, f"logps/{name}", name, colour)
    _finish(ax, "completion log-probs log πθ(y|x)", "log-prob")

    fig.suptitle(f"DPO run {run_dir}", fontsize=11)
    path = Path(output) if output is not None else run_dir / PLOT_NAME
    fig.savefig(path)
    return path


def _line(ax: Any, series: dict[str, Series], name: str, label: str, colour: str | None, **kw: Any) -> bool:
    if name not in series:
        return False
    steps, values = series[name]
    ax.plot(steps, values, label=label, color=colour, linewidth=kw.pop("linewidth", 1.2), **kw)
    return True


def _train_val(ax: Any, series: dict[str, Series], metric: str, label: str, colour: str) -> None:
    _line(ax, series, f"train/{metric}", f"train {label}", colour, alpha=0.8)
    if f"val/{metric}" in series:
        steps, values = series[f"val/{metric}"]
        ax.plot(steps, values, "o", color=colour, markeredgecolor="black", markersize=6, label=f"val {label}")


def _band(ax: Any, series: dict[str, Series], colour: str, label: str) -> None:
    """The training window's p10–p90 margin band (RewardMarginCallback), as a shaded area."""
    band = _p10_p90(series, "train")
    if band is not None:
        ax.fill_between(*band, color=colour, alpha=0.2, label=label)


def _val_range(ax: Any, series: dict[str, Series], colour: str, label: str) -> None:
    """Validation p10–p90 margins as a vertical range at each validation step."""
    band = _p10_p90(series, "val")
    if band is not None and band[0]:
        ax.vlines(*band, color=colour, linewidth=4, alpha=0.5, label=label)


def _p10_p90(series: dict[str, Series], stage: str) -> tuple[tuple, tuple, tuple] | None:
    """(steps, p10s, p90s) of ``stage``'s margin quantiles at the steps that logged both, or ``None``."""
    low, high = series.get(f"{stage}/margins/p10"), series.get(f"{stage}/margins/p90")
    if low is None or high is None:
        return None
    by_step = dict(zip(*high))
    pairs = [(s, v, by_step[s]) for s, v in zip(*low) if s in by_step]
    return tuple(zip(*pairs)) if pairs else ((), (), ())


def _finish(ax: Any, title: str, ylabel: str) -> None:
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("step")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)


# -- the reward–KL frontier ------------------------------------------------------------------------------


def plot_frontier(
    rows: Sequence[dict[str, Any]], path: str | Path, reward_name: str = "reward", log_kl: bool | None = None
) -> Path:
    """Reward against KL(πθ ‖ πref), one line per group (a run's step exports in order), ±1 standard error
    bars on both axes, the last point of each group labelled.

    ``log_kl``: a symmetric-log KL axis (linear below 0.1 nats, so KL 0 stays on it). ``None``: when the
    positive KLs span more than two decades."""
    fig = _figure(7.5, 5.2)
    ax = fig.subplots()
    groups: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault(str(row["group"]), []).append(row)
    for group, points in groups.items():
        points = sorted(points, key=lambda r: (r.get("step") is None, r.get("step") or 0))
        kl = [float(r["kl_mean"]) for r in points]
        reward = [float(r["reward_mean"]) for r in points]
        xerr = [_nan_to_zero(r.get("kl_sem")) for r in points]
        yerr = [_nan_to_zero(r.get("reward_sem")) for r in points]
        marker = "*" if len(points) == 1 and abs(kl[0]) < 1e-9 else "o"
        bars = ax.errorbar(
            kl,
            reward,
            xerr=xerr,
            yerr=yerr,
            marker=marker,
            markersize=9 if marker == "*" else 5,
            capsize=2,
            linewidth=1.2,
            label=group,
        )
        ax.annotate(
            group,
            (kl[-1], reward[-1]),
            textcoords="offset points",
            xytext=(5, -10),
            fontsize=8,
            color=bars[0].get_color(),
        )
    positive = [float(r["kl_mean"]) for r in rows if float(r["kl_mean"]) > 0]
    if log_kl is None:
        log_kl = bool(positive) and max(positive) / min(positive) > 100
    if log_kl:
        ax.set_xscale("symlog", linthresh=0.1, linscale=0.5)
    ax.set_xlabel("KL(πθ ‖ πref), nats per sequence (Monte-Carlo, ±1 s.e.)" + (", symlog axis" if log_kl else ""))
    ax.set_ylabel(f"mean {reward_name} (±1 s.e.)")
    ax.margins(x=0.1)  # room for the labels of the rightmost points
    ax.set_title("reward–KL frontier")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.savefig(path)
    return Path(path)


def _nan_to_zero(value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return 0.0
    return v if math.isfinite(v) else 0.0
