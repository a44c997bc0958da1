"""GenerationSamples: samples during fit, the logger tables, untouched RNG streams, rank 0 alone writes."""

from __future__ import annotations

import json
import random
from types import SimpleNamespace
from unittest.mock import MagicMock

import torch

from lightning_dpo import DPOModule, GenerationSamples, PreferenceDataModule
from lightning_dpo.callbacks.samples import _log_table, markdown_table
from lightning_dpo.models import load_causal_lm, load_tokenizer
from lightning_dpo.namespace import pl
from lightning_dpo.reference import FrozenReference, NoReference

REWARD = "lightning_dpo.tasks.politeness.politeness_reward"


class RngProbe(pl.callbacks.Callback):
    """Placed before and after GenerationSamples: records the RNG states around it at every validation end."""

    def __init__(self, record: list) -> None:
        self.record = record

    def on_validation_epoch_end(self, trainer, pl_module):
        self.record.append((torch.get_rng_state(), random.getstate()))


def test_samples_during_fit_leave_the_training_rng_stream_alone(tmp_path, tiny_model_dir, tiny_data_dir):
    states: list = []
    samples = GenerationSamples(num_prompts=2, max_new_tokens=6, reward=REWARD, every_n_val_runs=1)
    module = DPOModule(model_name_or_path=str(tiny_model_dir), optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2))
    data = PreferenceDataModule(dataset=str(tiny_data_dir), batch_size=4, max_length=96, max_prompt_length=48)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=2,
        val_check_interval=1,
        limit_val_batches=1,
        num_sanity_val_steps=1,
        logger=pl.loggers.TensorBoardLogger(tmp_path, name="tb", version=0),
        enable_checkpointing=False,
        enable_progress_bar=False,
        callbacks=[RngProbe(states), samples, RngProbe(states)],
    )
    trainer.fit(module, data)

    assert len(states) == 2 * 3  # sanity check + 2 validations, probed before and after
    for before, after in zip(states[::2], states[1::2]):
        assert torch.equal(before[0], after[0]) and before[1] == after[1]

    rows = [json.loads(line) for line in (tmp_path / "tb" / "version_0" / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * 2 * 2  # 2 validation runs (no sanity check) x policy/reference x 2 prompts
    assert {r["model"] for r in rows} == {"policy", "reference"}
    assert [r["step"] for r in rows] == [1] * 4 + [2] * 4
    assert rows[0]["prompt"] == data.tokenizer.decode(data.val_data[0]["prompt_input_ids"], skip_special_tokens=True)
    assert all(isinstance(r["completion"], str) and 1 <= r["num_tokens"] <= 6 for r in rows)
    assert all(-1.0 <= r["reward"] <= 1.0 for r in rows)
    # The same seed at every run: the unchanged reference writes the same text each time.
    reference = [r["completion"] for r in rows if r["model"] == "reference"]
    assert reference[:2] == reference[2:]

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (events,) = (tmp_path / "tb" / "version_0").glob("events.out.tfevents.*")
    acc = EventAccumulator(str(events))
    acc.Reload()
    assert any("samples" in tag for tag in acc.Tags()["tensors"])  # the text summary


def test_every_n_val_runs_and_user_prompts(tiny_model_dir):
    policy, tokenizer = load_causal_lm(str(tiny_model_dir)), load_tokenizer(str(tiny_model_dir))
    module = SimpleNamespace(policy=policy, reference=NoReference(), hparams={})  # reference-free
    trainer = _fake_trainer(tokenizer, is_global_zero=True, log_dir=None)
    callback = GenerationSamples(every_n_val_runs=2, prompts=["\n\nHuman: Hi!\n\nAssistant:"], max_new_tokens=4)
    callback.on_validation_epoch_end(trainer, module)
    assert callback.last_rows == []
    callback.on_validation_epoch_end(trainer, module)
    assert [r["model"] for r in callback.last_rows] == ["policy"]  # no reference model, no reference rows
    assert callback.last_rows[0]["prompt"] == "\n\nHuman: Hi!\n\nAssistant:"
    assert callback.state_dict() == {"val_runs": 2}


def test_non_zero_ranks_generate_but_write_nothing(tmp_path, tiny_model_dir):
    policy, tokenizer = load_causal_lm(str(tiny_model_dir)), load_tokenizer(str(tiny_model_dir))
    reference = FrozenReference(load_separate=lambda: policy)
    reference.prepare(policy)
    module = SimpleNamespace(policy=policy, reference=reference, hparams={})
    loggers = [
        MagicMock(spec=pl.loggers.TensorBoardLogger),
        MagicMock(spec=pl.loggers.WandbLogger),
        MagicMock(spec=pl.loggers.MLFlowLogger),
    ]
    trainer = _fake_trainer(tokenizer, is_global_zero=False, log_dir=str(tmp_path), loggers=loggers)
    callback = GenerationSamples(prompts=["\n\nHuman: Hi!\n\nAssistant:"], max_new_tokens=4)
    callback.on_validation_epoch_end(trainer, module)
    assert len(callback.last_rows) == 2  # this rank took part in generation (policy and reference)
    assert trainer.log_dir_reads == 1  # trainer.log_dir is a DDP broadcast: every rank must join it
    assert not list(tmp_path.iterdir())
    for logger in loggers:
        assert not logger.method_calls and not logger.experiment.method_calls

    trainer.is_global_zero = True
    callback.write(trainer, callback.last_rows)
    assert len((tmp_path / "samples.jsonl").read_text().splitlines()) == 2
    loggers[0].experiment.add_text.assert_called_once()
    loggers[1].log_table.assert_called_once()
    assert loggers[1].log_table.call_args.kwargs["columns"] == [
        "step",
        "epoch",
        "model",
        "prompt",
        "completion",
        "num_tokens",
    ]
    loggers[2].experiment.log_table.assert_called_once()


def test_markdown_table_escapes_cells():
    rows = [{"step": 1, "model": "policy", "completion": "a | b\nc", "reward": 0.5}]
    table = markdown_table(rows, ["step", "model", "completion", "reward"])
    assert table.splitlines()[2] == "| 1 | policy | a \\| b\\nc | 0.500 |"


def test_a_failing_logger_does_not_stop_training(tmp_path, recwarn):
    logger = MagicMock(spec=pl.loggers.WandbLogger)
    logger.log_table.side_effect = RuntimeError("offline")
    trainer = SimpleNamespace(
        is_global_zero=True, log_dir=str(tmp_path), default_root_dir=str(tmp_path), loggers=[logger], global_step=3
    )
    GenerationSamples(filename=None).write(
        trainer,
        [{"step": 3, "epoch": 0, "model": "policy", "prompt": "p", "completion": "c", "num_tokens": 1, "reward": None}],
    )
    assert any("could not log to" in str(w.message) for w in recwarn)
    _log_table(object(), "samples", [], 0)  # other loggers: nothing to do


class _FakeTrainer(SimpleNamespace):
    @property
    def log_dir(self):
        self.log_dir_reads += 1
        return self._log_dir


def _fake_trainer(tokenizer, is_global_zero: bool, log_dir: str | None, loggers=()):
    return _FakeTrainer(
        sanity_checking=False,
        is_global_zero=is_global_zero,
        world_size=1,
        global_step=5,
        current_epoch=0,
        _log_dir=log_dir,
        log_dir_reads=0,
        default_root_dir=log_dir,
        loggers=list(loggers),
        datamodule=SimpleNamespace(tokenizer=tokenizer, val_data=None),
    )
