"""Tokenisation happens once, in prepare_data; setup (every rank) loads the cache; the key covers every
setting that changes tokens."""

import os

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
    assert len(count_builds) == 2 and len(os.listdir(make.cache_dir)) == 2

    other_rank = make()  # another process: a fresh module, the same settings
    other_rank.setup("fit")
    assert len(count_builds) == 2
    assert other_rank.train_data["prompt_input_ids"] == first.train_data["prompt_input_ids"]
    assert other_rank.data_report == first.data_report


def test_setup_without_prepare_data_builds_and_caches(make, count_builds):
    make().setup("fit")
    make().setup("fit")
    assert len(count_builds) == 2


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
