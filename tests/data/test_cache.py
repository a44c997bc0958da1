"""Tokenisation happens once, in prepare_data; setup (every rank) loads the cache; the key covers every
setting that changes tokens."""

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from lightning_dpo import PreferenceDataModule
from lightning_dpo.data import datamodule as datamodule_module


@pytest.fixture
def make(tiny_data_dir, tiny_model_dir, tmp_path_factory):
    cache_dir = str(tmp_path_factory.mktemp("cache"))

    def make(**kwargs):
        args = dict(dataset=str(tiny_data_dir), tokenizer_name_or_path=str(tiny_model_dir), cache_dir=cache_dir)
        return PreferenceDataModule(**{**args, **kwargs})

    make.cache_dir = cache_dir
    return make


@pytest.fixture
def count_builds(monkeypatch):
    calls = []
    real = datamodule_module.build_split

    def counting(*args, **kwargs):
        calls.append(args[0][0].name)
        return real(*args, **kwargs)

    monkeypatch.setattr(datamodule_module, "build_split", counting)
    return calls


def test_second_run_does_no_tokenisation(make, count_builds):
    first = make()
    first.prepare_data()  # rank 0 of each node
    assert len(count_builds) == 2  # train and val
    first.setup("fit")  # loads what prepare_data wrote
    assert len(count_builds) == 2 and len(entries(make.cache_dir)) == 2

    other_rank = make()  # another process: a fresh module, the same settings
    other_rank.setup("fit")
    assert len(count_builds) == 2
    assert other_rank.train_data["prompt_input_ids"] == first.train_data["prompt_input_ids"]
    assert other_rank.data_report == first.data_report


def test_setup_without_prepare_data_builds_and_caches(make, count_builds):
    make().setup("fit")
    make().setup("fit")
    assert len(count_builds) == 2


def entries(cache_dir):
    """Cache entries: everything but the lock folder and other hidden names."""
    return sorted(p for p in Path(cache_dir).iterdir() if not p.name.startswith("."))


def keys(data):
    return {split: plan.key for split, plan in data._resolve().items()}


def test_key_follows_every_setting_that_changes_tokens(make, tmp_path, bos_chat_tokenizer_dir):
    base = keys(make())
    for change in (
        dict(max_length=300),
        dict(max_prompt_length=128),
        dict(truncation_mode="keep_start"),
        dict(system_prompt="Be kind."),
        dict(chat_template="{{ messages }}"),
        dict(columns={"prompt": "question"}),
        dict(tokenizer_name_or_path=str(bos_chat_tokenizer_dir)),  # same vocabulary, another template
    ):
        assert keys(make(**change))["train"] != base["train"], change
    for same in (
        dict(batch_size=3),
        dict(seed=1),
        dict(group_by_length=True),
        dict(strict=True),
        dict(num_workers=1),
        dict(val_size=0.5),
        dict(num_proc=2),
        dict(pad_to_multiple_of=8),
    ):
        assert keys(make(**same)) == base, same


def test_key_follows_the_data_bytes(make, tiny_data_dir, tmp_path, write_jsonl):
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(tiny_data_dir, copy)
    before = keys(make(dataset=str(copy)))
    with open(copy / "train.jsonl", "a") as f:
        f.write('{"prompt": "New?", "chosen": " yes", "rejected": " no"}\n')
    after = keys(make(dataset=str(copy)))
    assert after["train"] != before["train"] and after["val"] == before["val"]


def test_an_unwritable_cache_warns_and_still_works(make, tmp_path):
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    data = make(cache_dir=str(blocker / "cache"))
    with pytest.warns(UserWarning, match="could not write the tokenised data cache"):
        data.setup("fit")
    assert len(data.train_data) == 48


def test_multiprocess_tokenisation_gives_the_same_tokens(make):
    one, two = make(num_proc=1, cache_dir=None), make(num_proc=2)
    one.setup("fit")
    two.prepare_data()
    two.setup("fit")
    assert one.train_data["chosen_input_ids"] == two.train_data["chosen_input_ids"]


# -- damaged entries: reported, removed, rebuilt, never trained on ---------------------------------------


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _garble(path):
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 8] = bytes(b ^ 0x5A for b in data[middle : middle + 8])
    path.write_bytes(bytes(data))


def _files_of(entry):
    arrow = sorted((entry / "data").glob("*.arrow"))
    return {
        "arrow": arrow[0],
        "dataset_info": entry / "data" / "dataset_info.json",
        "state": entry / "data" / "state.json",
        "report": entry / "report.json",
        "manifest": entry / "manifest.json",
    }


@pytest.mark.parametrize("damage", [_truncate, _garble, Path.unlink], ids=["truncated", "garbled", "deleted"])
@pytest.mark.parametrize("kind", ["arrow", "dataset_info", "state", "report", "manifest"])
def test_a_damaged_cache_file_is_reported_and_rebuilt(make, count_builds, kind, damage):
    first = make()
    first.setup("fit")
    expected = list(first.train_data["chosen_input_ids"]), first.data_report  # read now: the file is damaged next
    (train_entry,) = [e for e in entries(make.cache_dir) if e.name == first._resolve()["train"].key]
    damage(_files_of(train_entry)[kind])
    count_builds.clear()

    again = make()
    with pytest.warns(UserWarning, match=rf"tokenised-data cache entry is unusable \({train_entry}.*removed it"):
        again.setup("fit")
    assert count_builds == [first._resolve()["train"].sources[0].name]  # train rebuilt; val still good
    assert (list(again.train_data["chosen_input_ids"]), again.data_report) == expected
    count_builds.clear()
    make().setup("fit")  # the rebuilt entry is whole
    assert count_builds == []


def test_a_foreign_entry_under_a_key_is_reported_and_rebuilt(make, count_builds):
    first = make()
    first.setup("fit")
    plans, expected = first._resolve(), list(first.train_data["chosen_input_ids"])
    train, val = (Path(make.cache_dir) / plans[s].key for s in ("train", "val"))
    shutil.rmtree(train)
    shutil.copytree(val, train)  # val's tokens, sitting under train's key
    count_builds.clear()
    again = make()
    with pytest.warns(UserWarning, match="a foreign entry"):
        again.setup("fit")
    assert len(count_builds) == 1 and list(again.train_data["chosen_input_ids"]) == expected


def test_a_dry_run_reports_a_damaged_entry_but_leaves_it(make):
    make().setup("fit")
    (entry,) = [e for e in entries(make.cache_dir) if e.name == make()._resolve()["train"].key]
    _garble(_files_of(entry)["arrow"])
    with pytest.warns(UserWarning, match="not using it"):
        report = make().dry_run()
    assert report["train"]["pairs"] > 0 and entry.exists()  # a dry run writes (and deletes) nothing


def test_an_interrupted_write_leaves_no_entry(make, monkeypatch, count_builds):
    from lightning_dpo.data import cache

    def crash(directory, key):
        raise KeyboardInterrupt  # killed after the data, before the manifest

    monkeypatch.setattr(cache.storage, "write_manifest", crash)
    with pytest.raises(KeyboardInterrupt):
        make().setup("fit")
    monkeypatch.undo()
    assert entries(make.cache_dir) == []  # staging is hidden, never under the key
    make().setup("fit")


# -- two runs at once on one cache directory -----------------------------------------------------------

RACE = """
import json, os, sys, time
import torch
from lightning_dpo import DPOModule, PreferenceDataModule
from lightning_dpo.data import datamodule as datamodule_module
from lightning_dpo.namespace import pl
import lightning_dpo.reference.precomputed as precomputed

model_dir, data_dir, cache, gate, out = sys.argv[1:]
builds, passes = [], []
real_build, real_logps = datamodule_module.build_split, precomputed.completion_logps
datamodule_module.build_split = lambda *a, **k: builds.append(1) or real_build(*a, **k)
precomputed.completion_logps = lambda *a, **k: passes.append(1) or real_logps(*a, **k)

class Losses(pl.Callback):
    losses = []
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(outputs["loss"].item())

while not os.path.exists(gate):  # both processes are imported and ready: start together
    time.sleep(0.01)
pl.seed_everything(0)
module = DPOModule(model_name_or_path=model_dir, optimizer=lambda p: torch.optim.AdamW(p, lr=1e-2),
                   lr_scheduler=None, reference={"mode": "precomputed", "cache_dir": os.path.join(cache, "ref")})
data = PreferenceDataModule(dataset=data_dir, tokenizer_name_or_path=model_dir, batch_size=4, max_length=96,
                            max_prompt_length=48, cache_dir=os.path.join(cache, "data"))
trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=3, logger=False, enable_checkpointing=False,
                     enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0, deterministic=True)
trainer.fit(module, data)
json.dump({"losses": Losses.losses, "builds": len(builds), "passes": len(passes),
           "table": module.reference.table.tolist()}, open(out, "w"))
"""


def test_two_fits_at_once_on_one_cache_directory(tmp_path, tiny_model_dir, tiny_data_dir):
    script = tmp_path / "race.py"
    script.write_text(textwrap.dedent(RACE))
    cache, gate = tmp_path / "cache", tmp_path / "go"
    runs = [
        subprocess.Popen(
            [sys.executable, str(script), str(tiny_model_dir), str(tiny_data_dir), str(cache), str(gate), str(out)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for out in (tmp_path / "a.json", tmp_path / "b.json")
    ]
    gate.touch()
    logs = [run.communicate(timeout=300)[0] for run in runs]
    for run, log in zip(runs, logs):
        assert run.returncode == 0, log[-4000:]
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in "ab")
    assert a["losses"] == b["losses"] and a["table"] == b["table"]
    assert a["builds"] + b["builds"] == 2  # train and val tokenised once in all: the second run waited and loaded
    assert len(entries(cache / "data")) == 2 and len(entries(cache / "ref")) == 1
    hidden = [p.name for p in (cache / "data").iterdir() if p.name.startswith(".") and p.name != ".locks"]
    assert hidden == [] and not [p for p in (cache / "ref").iterdir() if p.name.startswith(".")]  # no staging left
