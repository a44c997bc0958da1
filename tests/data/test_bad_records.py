"""Bad records: skipped and counted by reason by default, the first one raised with strict=True."""

import json

import pytest

from lightning_dpo import PreferenceDataModule
from lightning_dpo.data import flatten_report
from lightning_dpo.data.sources import PreferenceDataError

GOOD = [{"prompt": f"Q{i}?", "chosen": f" good {i}", "rejected": f" bad {i}"} for i in range(6)]
MESSY = [
    GOOD[0],
    "{not json",  # line 2
    json.dumps([1, 2]),  # line 3
    {"prompt": "Q", "chosen": " a"},  # line 4
    {"prompt": "Q", "chosen": " a", "rejected": None},  # line 5
    {"prompt": "Q", "chosen": " a", "rejected": 3},  # line 6
    {"prompt": "Q", "chosen": "", "rejected": " b"},  # line 7: kept, an empty (EOS-only) chosen completion
    {"prompt": "Q", "chosen": " a", "rejected": " a"},  # line 8
    GOOD[1],
    GOOD[0],  # line 10: a duplicate of line 1
    *GOOD[2:],
]
EXPECTED = {
    "invalid_json": 1,
    "not_a_record": 1,
    "missing_field": 2,
    "not_a_string": 1,
    "identical": 1,
    "duplicate": 1,
}


@pytest.fixture
def messy_dir(tmp_path, write_jsonl):
    write_jsonl(tmp_path / "train.jsonl", MESSY)
    write_jsonl(tmp_path / "val.jsonl", GOOD[:2])
    return tmp_path


def test_bad_records_are_skipped_counted_and_named(messy_dir, tiny_model_dir):
    data = PreferenceDataModule(dataset=str(messy_dir), tokenizer_name_or_path=str(tiny_model_dir))
    with pytest.warns(UserWarning, match=r"train: dropped 7 of 14 records \(2 missing_field, 1 ") as warned:
        data.setup("fit")
    message = str(next(w.message for w in warned if "train:" in str(w.message)))
    assert "train.jsonl:2: invalid JSON" in message
    assert "train.jsonl:4 field 'rejected': the field is missing" in message
    assert "data.strict=true" in message
    report = data.data_report["train"]
    assert report["dropped"] == EXPECTED and (report["read"], report["kept"], report["pairs"]) == (14, 7, 7)
    assert report["first_dropped"][0]["location"].endswith("train.jsonl:2")
    kept = (1, 7, 9, 11, 12, 13, 14)
    assert sorted(data.train_data["location"]) == sorted(f"{messy_dir}/train.jsonl:{n}" for n in kept)
    assert report["empty_completions"] == {"chosen": 1, "rejected": 0}
    assert report["first_empty"][0]["location"].endswith("train.jsonl:7")
    (empty,) = [p for p in data.train_data if p["location"].endswith(":7")]
    assert empty["chosen_input_ids"] == [data.tokenizer.eos_token_id]  # saying nothing: the EOS alone
    # The summary is there for the run's logger too.
    flat = flatten_report(data.data_report)
    assert flat["data/train/dropped/duplicate"] == 1 and flat["data/train/read"] == 14
    assert flat["data/train/empty_completions/chosen"] == 1
    assert flat["data/val/pairs"] == 2 and "data/train/lengths/prompt/p50" in flat


def test_strict_stops_at_the_first_bad_record(messy_dir, tiny_model_dir):
    data = PreferenceDataModule(dataset=str(messy_dir), tokenizer_name_or_path=str(tiny_model_dir), strict=True)
    with pytest.raises(PreferenceDataError, match=r"train\.jsonl:2: invalid JSON") as err:
        data.setup("fit")
    assert err.value.kind == "invalid_json"


def test_strict_after_a_cached_lenient_run_still_stops(messy_dir, tiny_model_dir, tmp_path_factory):
    cache_dir = str(tmp_path_factory.mktemp("cache"))
    kwargs = dict(dataset=str(messy_dir), tokenizer_name_or_path=str(tiny_model_dir), cache_dir=cache_dir)
    with pytest.warns(UserWarning):
        PreferenceDataModule(**kwargs).setup("fit")
    with pytest.raises(PreferenceDataError, match=r"train\.jsonl:2: invalid JSON"):
        PreferenceDataModule(**kwargs, strict=True).setup("fit")


def test_strict_refuses_an_empty_completion_even_from_a_lenient_cache(tmp_path, write_jsonl, tiny_model_dir):
    write_jsonl(tmp_path / "train.jsonl", [GOOD[0], GOOD[1], MESSY[6], GOOD[0], *GOOD[2:]])  # empty at 3, dup at 4
    kwargs = dict(dataset=str(tmp_path / "train.jsonl"), tokenizer_name_or_path=str(tiny_model_dir), val_size=2)
    with pytest.warns(UserWarning, match="1 duplicate"):
        PreferenceDataModule(**kwargs, cache_dir=str(tmp_path / "c")).setup("fit")  # the empty one is kept
    for cache in ("c", "fresh"):  # from the lenient run's cache, and tokenising anew
        data = PreferenceDataModule(**kwargs, cache_dir=str(tmp_path / cache), strict=True)
        with pytest.raises(
            PreferenceDataError, match=r"train\.jsonl:3, field 'chosen': the completion is empty"
        ) as err:
            data.setup("fit")
        assert err.value.kind == "empty_completion"


def test_strict_names_a_duplicate_and_its_original(tmp_path, write_jsonl, tiny_model_dir):
    write_jsonl(tmp_path / "train.jsonl", [GOOD[0], GOOD[1], GOOD[0]])
    data = PreferenceDataModule(dataset=str(tmp_path), tokenizer_name_or_path=str(tiny_model_dir), strict=True)
    with pytest.raises(PreferenceDataError, match=r"train\.jsonl:3: exact duplicate of .*train\.jsonl:1"):
        data.setup("fit")


def test_nothing_usable_is_an_error_that_says_why(tmp_path, write_jsonl, tiny_model_dir):
    write_jsonl(tmp_path / "train.jsonl", ["{oops", {"prompt": "Q", "chosen": " a", "rejected": " a"}])
    data = PreferenceDataModule(dataset=str(tmp_path), tokenizer_name_or_path=str(tiny_model_dir))
    with pytest.raises(ValueError, match="no usable pairs") as err:
        data.setup("fit")
    assert "invalid_json" in str(err.value) and "identical" in str(err.value)


def test_template_problems_are_bad_records_too(tmp_path, write_jsonl, bos_chat_tokenizer_dir):
    user = {"role": "user", "content": "Hi"}
    rows = [
        {
            "prompt": [user],
            "chosen": [{"role": "assistant", "content": f"Hello {i}"}],
            "rejected": [{"role": "assistant", "content": "Go."}],
        }
        for i in range(4)
    ]
    write_jsonl(tmp_path / "train.jsonl", rows)
    write_jsonl(tmp_path / "val.jsonl", rows[:1])
    # A template that refuses conversations without a system turn, except the one whose reply says "Hello 1".
    template = (
        "{% if messages[0]['role'] != 'system' and messages|length > 1 and messages[1]['content'] == 'Hello 2' %}"
        "{{ raise_exception('roles must alternate') }}{% endif %}"
    )
    data = PreferenceDataModule(
        dataset=str(tmp_path),
        tokenizer_name_or_path=str(bos_chat_tokenizer_dir),
        chat_template=template + open(bos_chat_tokenizer_dir / "chat_template.jinja").read(),
    )
    with pytest.warns(UserWarning, match=r"1 template_error.*train\.jsonl:3 field 'prompt'.*roles must alternate"):
        data.setup("fit")
    assert len(data.train_data) == 3
    strict = PreferenceDataModule(**{**data.hparams, "strict": True})
    with pytest.raises(PreferenceDataError, match=r"train\.jsonl:3, field 'prompt'.*roles must alternate"):
        strict.setup("fit")
