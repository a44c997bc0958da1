"""Security: a checkpoint carrying pickled code is refused on every loading path, remote code stays off unless
asked for, and the Lightning floors agree between pyproject.toml and the namespace module."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from lightning_dpo import AtomicCheckpointIO, DPOModule
from lightning_dpo.callbacks.checkpoint_io import UnsafeCheckpointError
from lightning_dpo.cli import main
from lightning_dpo.namespace import REQUIREMENTS

REPO = Path(__file__).resolve().parents[1]


class Payload:
    """Unpickling this creates the file ``Payload.marker``: what a crafted checkpoint could do instead."""

    marker: Path | None = None

    def __reduce__(self):
        return (open, (str(Payload.marker), "w"))


@pytest.fixture
def crafted(tmp_path, tiny_model_dir):
    """A real checkpoint of the tiny model with a pickled payload among its hyperparameters."""
    Payload.marker = tmp_path / "pwned"
    module = DPOModule(model_name_or_path=str(tiny_model_dir))
    module.configure_model()
    checkpoint = {
        "state_dict": module.state_dict(),
        "hyper_parameters": {**module.hparams, "payload": Payload()},
        "pytorch-lightning_version": "2.6.6",
        "epoch": 0,
        "global_step": 0,
        "loops": {},
        "callbacks": {},
        "optimizer_states": [],
        "lr_schedulers": [],
    }
    path = tmp_path / "crafted.ckpt"
    torch.save(checkpoint, path)
    assert not Payload.marker.exists()
    return path


def test_the_checkpoint_plugin_refuses_pickled_code(crafted):
    with pytest.raises(UnsafeCheckpointError, match=r"refusing the checkpoint .*crafted\.ckpt.*pickled objects"):
        AtomicCheckpointIO().load_checkpoint(crafted)
    assert not Payload.marker.exists()


def test_fit_and_load_from_checkpoint_refuse_it(crafted, make_data, make_trainer, tiny_model_dir):
    with pytest.raises(UnsafeCheckpointError):
        trainer = make_trainer(max_steps=1, plugins=[AtomicCheckpointIO()])
        trainer.fit(DPOModule(model_name_or_path=str(tiny_model_dir)), make_data(), ckpt_path=crafted)
    with pytest.raises(Exception, match="Weights only load failed"):
        DPOModule.load_from_checkpoint(crafted, weights_only=True)
    assert not Payload.marker.exists()


def test_the_command_refuses_it_even_when_torch_is_told_to_unpickle(
    crafted, monkeypatch, tmp_path, tiny_model_dir, tiny_data_dir, capsys
):
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")  # torch's default flips to unpickling ...
    monkeypatch.chdir(tmp_path)
    args = [
        "fit",
        f"--model.model_name_or_path={tiny_model_dir}",
        f"--data.dataset={tiny_data_dir}",
        f"--ckpt_path={crafted}",
        "--trainer.max_steps=1",
        "--trainer.enable_progress_bar=false",
    ]
    for extra in ([], ["--trainer.plugins=null"]):  # the default config's AtomicCheckpointIO, or Lightning's own
        assert main([*args, *extra]) == 1
        err = capsys.readouterr().err
        assert err.strip().splitlines() == [
            f"lightning-dpo fit: error: refusing the checkpoint {crafted}: it does not load with weights_only=True, "
            "so it carries pickled objects that would run code (Unsupported global: GLOBAL io.open was not an "
            "allowed global by default). Load only checkpoints you made; a lightning_dpo checkpoint holds tensors "
            "and primitives"
        ]
    assert not Payload.marker.exists()  # ... the command asked for weights_only=True, explicitly


def test_evaluation_loads_checkpoints_without_unpickling(crafted):
    from lightning_dpo.tools.model_sources import ModelSource, load_source

    with pytest.raises(Exception, match="Weights only load failed"):
        load_source(ModelSource(path=str(crafted), label="x", group="x"))
    assert not Payload.marker.exists()


@pytest.fixture
def from_pretrained_calls(monkeypatch):
    """Every ``from_pretrained`` that the package makes, with its keyword arguments (the real load still runs)."""
    import transformers

    calls = []
    for name in ("AutoModelForCausalLM", "AutoTokenizer", "AutoModelForSequenceClassification", "AutoConfig"):
        cls = getattr(transformers, name)
        real = cls.from_pretrained.__func__

        def recording(klass, *args, _real=real, _name=name, **kwargs):
            calls.append((_name, kwargs.get("trust_remote_code")))
            return _real(klass, *args, **kwargs)

        monkeypatch.setattr(cls, "from_pretrained", classmethod(recording))
    return calls


def test_remote_code_stays_off_unless_asked_for(from_pretrained_calls, tiny_model_dir, embedded_model_dir):
    from transformers import AutoModelForSequenceClassification, LlamaConfig

    module = DPOModule(
        model_name_or_path=str(tiny_model_dir), reference={"model_name_or_path": str(embedded_model_dir)}
    )
    module.configure_model()  # the policy and a separate frozen reference
    models = [c for c in from_pretrained_calls if c[0] == "AutoModelForCausalLM"]
    assert len(models) == 2 and all(trust is False for _, trust in from_pretrained_calls)

    from_pretrained_calls.clear()
    asked = DPOModule(model_name_or_path=str(tiny_model_dir), trust_remote_code=True)
    asked.configure_model()
    assert [c for c in from_pretrained_calls if c[0] == "AutoModelForCausalLM"] == [("AutoModelForCausalLM", True)]

    from_pretrained_calls.clear()
    config = LlamaConfig.from_pretrained(tiny_model_dir)
    config.num_labels = 1
    reward_dir = tiny_model_dir.parent / "reward"
    AutoModelForSequenceClassification.from_config(config).save_pretrained(reward_dir)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (reward_dir / name).write_bytes((tiny_model_dir / name).read_bytes())
    from_pretrained_calls.clear()
    from lightning_dpo.evaluation.rewards import load_reward

    load_reward(f"hf:{reward_dir}")
    names = {name for name, _ in from_pretrained_calls}
    assert {"AutoTokenizer", "AutoModelForSequenceClassification"} <= names
    assert all(trust is False for _, trust in from_pretrained_calls)  # passed, and off (None: left to a default)


def test_the_lightning_floors_agree():
    text = (REPO / "pyproject.toml").read_text()
    floors = dict(re.findall(r'"((?:pytorch-)?lightning)(?:\[[^\]]*\])?>=([\d.]+)', text))
    assert floors["pytorch-lightning"] == REQUIREMENTS["pytorch_lightning"].split(">=")[1] == "2.6.6"
    assert REQUIREMENTS["lightning"].split(">=")[1] == floors["pytorch-lightning"]
    if "lightning" in floors:  # once the `lightning` extra is declared, its floor is the same
        assert floors["lightning"] == floors["pytorch-lightning"]
