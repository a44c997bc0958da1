"""``lightning-dpo plot``: PNGs from metrics.csv and from TensorBoard event files; the frontier PNG."""

from __future__ import annotations

import csv
import sys

import pytest

pytest.importorskip("matplotlib")

from lightning_dpo.cli import main
from lightning_dpo.tools.plotting import find_run_dir, plot_frontier, plot_run, read_metrics, require_matplotlib

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _metrics(steps: int = 30) -> list[dict[str, float]]:
    rows = []
    for step in range(steps):
        m = step / steps
        rows.append(
            {
                "step": step,
                "epoch": 0,
                "train/loss": 0.69 - 0.5 * m,
                "train/rewards/chosen": m,
                "train/rewards/rejected": -m,
                "train/rewards/margins": 2 * m,
                "train/rewards/accuracies": m,
                "train/logps/chosen": -20 - m,
                "train/logps/rejected": -20 - 3 * m,
                "lr-AdamW": 1e-4,
                "train/margins/p10": 2 * m - 0.5,
                "train/margins/p50": 2 * m,
                "train/margins/p90": 2 * m + 0.5,
            }
        )
        if step % 10 == 9:
            rows.append(
                {
                    "step": step,
                    "epoch": 0,
                    "val/loss": 0.69 - 0.5 * m,
                    "val/rewards/chosen": m,
                    "val/rewards/rejected": -m,
                    "val/rewards/margins": 2 * m,
                    "val/rewards/accuracies": m,
                    "val/margins/p10": 2 * m - 0.4,
                    "val/margins/p90": 2 * m + 0.4,
                }
            )
    return rows


def _write_csv(path, rows):
    fields = sorted({k for r in rows for k in r}, key=lambda k: (k not in ("step", "epoch"), k))
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def _is_png(path) -> bool:
    return path.is_file() and path.stat().st_size > 10_000 and path.read_bytes()[:8] == PNG_MAGIC


def test_plot_from_metrics_csv_through_the_command(tmp_path, capsys):
    run = tmp_path / "lightning_logs" / "version_3"
    run.mkdir(parents=True)
    _write_csv(run / "metrics.csv", _metrics())
    series = read_metrics(run)
    assert series["val/rewards/accuracies"][0] == [9.0, 19.0, 29.0]
    assert main(["plot", str(run)]) == 0
    assert _is_png(run / "metrics.png")
    assert str(run / "metrics.png") in capsys.readouterr().out
    # A folder of runs: the newest version is plotted.
    (tmp_path / "lightning_logs" / "version_1").mkdir()
    _write_csv(tmp_path / "lightning_logs" / "version_1" / "metrics.csv", _metrics(5))
    assert find_run_dir(tmp_path / "lightning_logs") == run
    assert plot_run(tmp_path / "lightning_logs", tmp_path / "other.png") == tmp_path / "other.png"
    assert _is_png(tmp_path / "other.png")


def test_plot_finds_the_newest_run_below_the_trainer_s_root_dir(tmp_path, capsys):
    """``lightning-dpo plot DIR`` with DIR = default_root_dir, the folder that holds lightning_logs/."""
    for version in (0, 2, 1):
        run = tmp_path / "lightning_logs" / f"version_{version}"
        (run / "checkpoints").mkdir(parents=True)
        rows = [{k: v for k, v in r.items() if k != "lr-AdamW"} | {"train/learning_rate": 1e-4} for r in _metrics()]
        _write_csv(run / "metrics.csv", rows)
    (tmp_path / "hf_model").mkdir()  # what an export beside the logs looks like: not a run
    newest = tmp_path / "lightning_logs" / "version_2"
    assert find_run_dir(tmp_path) == newest
    assert main(["plot", str(tmp_path)]) == 0
    assert _is_png(newest / "metrics.png") and str(newest / "metrics.png") in capsys.readouterr().out
    assert "train/learning_rate" in read_metrics(newest)
    with pytest.raises(FileNotFoundError, match="no metrics in or below"):
        find_run_dir(tmp_path / "hf_model")


def test_plot_from_tensorboard_events(tmp_path):
    pytest.importorskip("tensorboard")
    from lightning_dpo.namespace import pl

    logger = pl.loggers.TensorBoardLogger(tmp_path, name="tb", version=0)
    for row in _metrics():
        logger.log_metrics({k: v for k, v in row.items() if k not in ("step", "epoch")}, step=int(row["step"]))
    logger.finalize("success")
    run = tmp_path / "tb" / "version_0"
    assert not (run / "metrics.csv").exists()
    assert read_metrics(run)["train/margins/p90"][1][-1] == pytest.approx(2 * 29 / 30 + 0.5)
    assert _is_png(plot_run(run))


def test_plot_errors_say_what_to_do(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError, match="metrics.csv"):
        plot_run(tmp_path)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    with pytest.raises(ImportError, match=r"pip install 'lightning-dpo\[plot\]'"):
        require_matplotlib()


def test_frontier_png(tmp_path):
    rows = [
        {"group": "β=0.1", "step": 25, "kl_mean": 0.2, "kl_sem": 0.05, "reward_mean": 0.1, "reward_sem": 0.04},
        {"group": "β=0.1", "step": 50, "kl_mean": 0.8, "kl_sem": 0.1, "reward_mean": 0.5, "reward_sem": 0.04},
        {"group": "sft", "step": None, "kl_mean": 0.0, "kl_sem": 0.0, "reward_mean": 0.0, "reward_sem": float("nan")},
    ]
    assert _is_png(plot_frontier(rows, tmp_path / "frontier.png"))
