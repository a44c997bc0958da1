"""The data report: numbers for the run's logger and the text of `lightning-dpo data`."""

import numpy as np

from lightning_dpo.data.report import flatten_report, format_report, percentiles, skipped_warning


def test_percentiles_are_token_counts_that_occur():
    assert percentiles(np.arange(1, 101)) == {"p50": 50, "p90": 90, "p95": 95, "p99": 99, "max": 100}
    assert percentiles(np.array([], dtype=int))["max"] == 0


def test_warning_and_flat_metrics():
    report = {
        "read": 10,
        "kept": 7,
        "pairs": 7,
        "dropped": {"duplicate": 2, "no_completion_tokens": 1},
        "first_dropped": [{"location": "f.jsonl:4", "field": None, "message": "exact duplicate of f.jsonl:1"}],
        "lengths": {"prompt": {"p50": 3}},
        "padding": {"shuffled": 0.3, "grouped_by_length": 0.1},
    }
    text = skipped_warning("train", report)
    assert text.startswith("train: dropped 3 of 10 records (2 duplicate, 1 no_completion_tokens); first: f.jsonl:4")
    assert "max_length" in text
    assert skipped_warning("val", {"read": 3, "dropped": {}}) is None
    flat = flatten_report({"train": report})
    assert flat["data/train/dropped/duplicate"] == 2 and flat["data/train/padding/shuffled"] == 0.3
    assert "data/train/first_dropped" not in flat
    assert "duplicate" in format_report({"train": report})
