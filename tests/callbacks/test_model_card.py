"""The model card written with every export, its Hub front matter, and push_to_hub without network or token."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from huggingface_hub import ModelCard

from lightning_dpo import DPOModule, HFExportCallback
from lightning_dpo.callbacks.model_card import HubSettings, card_metadata, push_to_hub
from lightning_dpo.namespace import pl


@pytest.fixture
def exported(tmp_path, tiny_model_dir, make_data, make_trainer):
    module = DPOModule(model_name_or_path=str(tiny_model_dir), optimizer=lambda p: torch.optim.AdamW(p, lr=1e-3))
    trainer = make_trainer(
        max_steps=2, limit_val_batches=1, val_check_interval=2, logger=pl.loggers.CSVLogger(tmp_path),
        callbacks=[HFExportCallback()],
    )  # fmt: skip
    trainer.fit(module, make_data())
    return trainer, tmp_path / "lightning_logs" / "version_0" / "hf_model"


def test_every_export_has_a_card_in_the_hub_format(exported):
    trainer, path = exported
    card = ModelCard.load(path / "README.md")
    data = card.data.to_dict()
    assert data["library_name"] == "transformers" and {"dpo", "lightning"} <= set(data["tags"])
    assert "base_model" not in data and "datasets" not in data  # a local model and data: no Hub ids to name
    text = card.text
    assert "| loss | sigmoid (β = 0.1) |" in text and "| reference | frozen |" in text
    assert "| optimizer | AdamW (lr 0.001) |" in text and "| optimizer steps | 2 |" in text
    assert "| pairs per optimizer step | 4 (4 per device × 1 device(s) × 1 accumulated) |" in text
    accuracy = float(trainer.callback_metrics["val/rewards/accuracies"])
    assert f"| `val/rewards/accuracies` | {accuracy:.4f} |" in text
    assert "## Reproduce" in text and "```bash" in text  # no CLI config here: the command line


def test_hub_ids_reach_the_front_matter_and_paths_do_not(tmp_path):
    module = SimpleNamespace(hparams={"model_name_or_path": "Qwen/Qwen2.5-0.5B-Instruct"})
    data = SimpleNamespace(hparams={"dataset": [{"path": "Anthropic/hh-rlhf"}, {"path": str(tmp_path)}]})
    trainer = SimpleNamespace(datamodule=data)
    metadata = card_metadata(trainer, module, adapter=True)
    assert metadata["base_model"] == "Qwen/Qwen2.5-0.5B-Instruct" and metadata["datasets"] == ["Anthropic/hh-rlhf"]
    assert metadata["library_name"] == "peft"
    (tmp_path / "README.md").write_text("---\nlicense: apache-2.0\n---\n# base\n")
    local = card_metadata(
        SimpleNamespace(datamodule=None), SimpleNamespace(hparams={"model_name_or_path": str(tmp_path)}), False
    )
    assert local["license"] == "apache-2.0" and "base_model" not in local  # read from the base's own card


def test_push_without_network_or_token_says_so_and_keeps_the_export(exported, monkeypatch):
    _, path = exported
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    before = sorted(p.name for p in path.iterdir())
    with pytest.raises(RuntimeError, match=r"push_to_hub to 'me/tiny-dpo' failed .*The export is intact at"):
        push_to_hub(str(path), HubSettings(repo_id="me/tiny-dpo", private=True))
    assert sorted(p.name for p in path.iterdir()) == before and "model.safetensors" in before
    assert HFExportCallback(push_to_hub={"repo_id": "me/tiny-dpo"}).push_to_hub == HubSettings("me/tiny-dpo")
