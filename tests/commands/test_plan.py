"""``lightning-dpo plan``: settings from flags, a fit config and a data report; the plan it prints and writes."""

from __future__ import annotations

import json

import yaml

from lightning_dpo.cli import main
from lightning_dpo.plan import GiB


def test_plan_from_flags_prints_memory_by_cause_and_flops(tiny_model_dir, tmp_path, capsys):
    out = tmp_path / "plan.json"
    args = ["plan", "--model", str(tiny_model_dir), "--batch-size", "2", "--max-length", "64", "--json", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "peak memory per device" in text and "optimizer state" in text and "TFLOP" in text
    plan = json.loads(out.read_text())
    assert plan["memory_total_bytes"] == sum(plan["memory_bytes"].values())
    assert plan["lengths"] == {
        "prompt": 32,
        "completion": 32,
        "source": "the length limits' worst case",
        "percentile": "max",
    }
    assert plan["layout"] == "shared" and plan["flops"]["tokens"] == 2 * (32 + 2 * 32)


def test_plan_reads_a_fit_config_and_flags_override_it(tiny_model_dir, tmp_path, capsys):
    config = tmp_path / "fit.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "trainer": {"accelerator": "gpu", "devices": 8, "precision": "bf16-true", "strategy": "ddp"},
                "model": {
                    "model_name_or_path": "some/hub-model",
                    "lora": {"r": 8, "target_modules": "all-linear"},
                    "gradient_checkpointing": True,
                    "optimizer": {"class_path": "torch.optim.AdamW", "init_args": {"lr": 1e-5}},
                },
                "data": {"batch_size": 4, "max_length": 128, "max_prompt_length": 96},
            }
        )
    )
    out = tmp_path / "plan.json"
    assert main(["plan", "--config", str(config), "--model", str(tiny_model_dir), "--json", str(out)]) == 0
    plan = json.loads(out.read_text())
    s = plan["settings"]
    assert (s["accelerator"], s["devices"], s["precision"], s["strategy"]) == ("gpu", 8, "bf16-true", "ddp")
    assert (s["reference"], s["checkpointing"], s["optimizer"], s["batch_size"]) == ("adapter", True, "adamw", 4)
    assert plan["lora_parameters"] > 0 and "reference" not in plan["memory_bytes"]
    assert plan["lengths"]["prompt"] == 96 and plan["lengths"]["completion"] == 32
    assert plan["layout"] == "padded" and plan["budget_gib"] == 80
    assert "fits in 80 GiB" in capsys.readouterr().out


def test_plan_takes_lengths_from_a_data_report(tiny_model_dir, tiny_data_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("LIGHTNING_DPO_CACHE", str(tmp_path / "cache"))
    report = tmp_path / "report.json"
    data_args = ["--model.model_name_or_path", str(tiny_model_dir), "--data.dataset", str(tiny_data_dir)]
    assert main(["data", *data_args, "--data.max_length", "96", "--report", str(report)]) == 0
    lengths = json.loads(report.read_text())["train"]["lengths"]
    out = tmp_path / "plan.json"
    args = ["plan", "--model", str(tiny_model_dir), "--data-report", str(report), "--max-length", "4096"]
    assert main([*args, "--lengths", "p90", "--json", str(out)]) == 0
    plan = json.loads(out.read_text())
    assert (plan["lengths"]["prompt"], plan["lengths"]["completion"]) == (
        lengths["prompt"]["p90"],
        lengths["completion"]["p90"],
    )
    assert plan["flops"]["lengths_p50"] == [lengths["prompt"]["p50"], lengths["completion"]["p50"]]
    assert plan["memory_total_bytes"] < 4 * GiB
