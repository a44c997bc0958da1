"""benchmarks/validate_plan.py: each measured lightning_dpo run gets the plan of its own settings and batches."""

from __future__ import annotations

import json

import pytest

from lightning_dpo.plan import MemorySettings, ModelDims, peak_memory

SHAPE = {"layers": 2, "hidden": 64, "intermediate": 172, "heads": 4, "vocab": 1000, "tied": False, "pairs": 2}
SHAPE |= {"max_length": 64, "history": [0, 1], "follow_ups": [0, 1], "kv_heads": None, "arch": "llama"}
LENGTHS = [[10, 5, 7], [30, 12, 9], [4, 3, 3], [8, 2, 2]]  # two steps of two pairs: step 1 is the larger


@pytest.fixture
def validate(load_script):
    return load_script("benchmarks/validate_plan.py")


def summary(runners: dict) -> dict:
    return {"small": {"shape": SHAPE, "pair_lengths": LENGTHS, "runners": runners}}


def test_each_lightning_runner_gets_its_options_plan_and_others_are_left_out(validate, tmp_path):
    runners = {
        "lightning_dpo": {"peak_rss_mib": 1000.0},
        "lightning_dpo+in_backward": {"peak_rss_mib": 900.0},
        "lightning_dpo+checkpointing": {"peak_rss_mib": 800.0},
        "trl": {"peak_rss_mib": 2000.0},
        "lightning_dpo_padded": {"peak_rss_mib": 1100.0},
    }
    rows = {r["run"].split(":", 2)[2]: r for r in validate.bench_rows("run", summary(runners))}
    assert set(rows) == {"lightning_dpo", "lightning_dpo+in_backward", "lightning_dpo+checkpointing"}

    dims = ModelDims.from_config(validate.shape_config(SHAPE))
    # The larger step's batch: each pair's prompt once, scored = completion tokens.
    base = dict(tokens=10 + 5 + 7 + 30 + 12 + 9, scored=5 + 7 + 12 + 9, optimizer="adamw", optimizer_impl="for-loop")
    for runner, extra in (
        ("lightning_dpo", {}),
        ("lightning_dpo+in_backward", {"optimizer_in_backward": True}),
        ("lightning_dpo+checkpointing", {"checkpointing": True}),
    ):
        expected = peak_memory(dims, MemorySettings(**base, **extra)).total
        assert rows[runner]["predicted_bytes"] == pytest.approx(expected)
        measured = runners[runner]["peak_rss_mib"] * 2**20
        assert rows[runner]["error"] == pytest.approx(expected / measured - 1)
    assert rows["lightning_dpo+in_backward"]["parts"].get("gradients", 0) < rows["lightning_dpo"]["parts"]["gradients"]


def test_a_profile_report_reads_its_optimizer_and_module_options(validate, tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps(validate.shape_config(SHAPE)))
    report = {
        "median": {},
        "model_config": str(config),
        "optimizer": "adamw_inbwd",
        "module_kwargs": {"reference": {"dtype": "bfloat16"}},
        "steps": [{"pairs": LENGTHS[:2]}, {"pairs": LENGTHS[2:]}],
        "step_peak_rss": 2**30,
    }
    (r,) = validate.profile_rows("p", report)
    dims = ModelDims.from_config(validate.shape_config(SHAPE))
    settings = MemorySettings(
        tokens=73,
        scored=33,
        optimizer="adamw",
        optimizer_impl="for-loop",
        optimizer_in_backward=True,
        reference_dtype="bfloat16",
    )
    assert r["predicted_bytes"] == pytest.approx(peak_memory(dims, settings).total)
    assert r["parts"]["reference"] == pytest.approx(dims.params * 2)  # bf16-stored reference
