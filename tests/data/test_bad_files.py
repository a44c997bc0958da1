"""Bad files, not only bad records: each is read as far as it can be, and anything left out is counted and named
(file and line, or record); a file that cannot be read at all is one ``UserError`` naming it."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest
import torch

from lightning_dpo import DPOModule, PreferenceDataModule
from lightning_dpo.cli import main
from lightning_dpo.data.sources import DataFileError, DataFileNotFound, PreferenceDataError, read_splits
from lightning_dpo.errors import UserError
from lightning_dpo.models import SequenceTooLong, TokenizerError

GOOD = [{"prompt": f"Question {i}?", "chosen": f" A good answer {i}.", "rejected": f" No {i}."} for i in range(6)]
pytestmark = pytest.mark.filterwarnings("ignore:(train|val). dropped")


def jsonl(rows) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


def csv_text(rows) -> str:
    return pd.DataFrame(rows).to_csv(index=False)


@pytest.fixture
def data(tmp_path, tiny_model_dir):
    """``data(files: {name: str | bytes}, **overrides)`` -> a set-up PreferenceDataModule over a folder."""

    def make(files, **overrides):
        folder = tmp_path / "data"
        folder.mkdir(exist_ok=True)
        for name, content in files.items():
            path = folder / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(content.encode() if isinstance(content, str) else content)
        kwargs = {"dataset": str(folder), "tokenizer_name_or_path": str(tiny_model_dir), "val_size": 2, **overrides}
        module = PreferenceDataModule(**kwargs)
        module.setup("fit")
        return module

    return make


def tokens(module):
    both = [*module.train_data["chosen_input_ids"], *module.val_data["chosen_input_ids"]]
    return sorted(map(tuple, both))


@pytest.mark.parametrize(
    "name, content",
    [
        ("train.jsonl", "\ufeff" + jsonl(GOOD)),  # a byte-order mark
        ("train.jsonl", jsonl(GOOD).replace("\n", "\r\n")),  # Windows line ends
        ("train.json", "\ufeff" + json.dumps(GOOD)),
        ("train.csv", "\ufeff" + csv_text(GOOD)),
        ("train.csv", csv_text(GOOD).replace("\n", "\r\n")),
        ("train.jsonl", json.dumps(GOOD)),  # a JSON array where JSON lines were expected, on one line
        ("train.jsonl", json.dumps(GOOD, indent=2)),  # ... and over many
    ],
    ids=["jsonl-bom", "jsonl-crlf", "json-bom", "csv-bom", "csv-crlf", "array-in-jsonl", "multiline-array-in-jsonl"],
)
def test_encodings_and_layouts_lose_nothing(data, name, content):
    clean = data({"train.jsonl": jsonl(GOOD)})
    clean_tokens = tokens(clean)
    os.remove(os.path.join(clean.hparams.dataset, "train.jsonl"))
    if "array" in str(content)[:1] or content.startswith("["):
        with pytest.warns(UserWarning, match="holds a JSON array, not JSON lines: reading it as an array"):
            module = data({name: content})
    else:
        module = data({name: content})
    report = module.data_report["train"]
    assert report["read"] == 6 and report["dropped"] == {} and tokens(module) == clean_tokens


def test_non_utf8_bytes(data, tmp_path):
    bad = b'{"prompt": "Caf\xe9?", "chosen": " yes", "rejected": " no"}\n'
    module = data({"train.jsonl": jsonl(GOOD[:3]).encode() + bad + jsonl(GOOD[3:]).encode()})
    assert module.data_report["train"]["dropped"] == {"invalid_json": 1}  # JSON lines: that line, counted
    assert module.data_report["train"]["first_dropped"][0]["location"].endswith("train.jsonl:4")
    os.remove(tmp_path / "data" / "train.jsonl")
    with pytest.raises(DataFileError, match=r"train\.csv:3: not UTF-8 \(byte 0xe9"):  # a table: the file, refused
        data({"train.csv": csv_text(GOOD).encode().replace(b"Question 1", b"Caf\xe9 1")})
    os.remove(tmp_path / "data" / "train.csv")
    with pytest.raises(PreferenceDataError, match=r"train\.json: not UTF-8 at byte"):
        data({"train.json": json.dumps(GOOD).encode().replace(b"Question 2", b"Caf\xe9 2")})


def test_a_50_mb_line_is_skipped_and_counted_not_tokenised(data, tmp_path):
    huge = {"prompt": "Q?", "chosen": " " + "word " * 10_000_000, "rejected": " no"}  # 50 MB on one line
    module = data({"train.jsonl": jsonl(GOOD[:3]) + json.dumps(huge) + "\n" + jsonl(GOOD[3:])})
    report = module.data_report["train"]
    assert report["dropped"] == {"too_large": 1} and report["read"] == 7
    (entry,) = report["first_dropped"]
    assert entry["location"].endswith("train.jsonl:4") and "over data.max_record_chars=4,000,000" in entry["message"]
    with pytest.raises(PreferenceDataError, match=r"train\.jsonl:4: a record of 50,000,0\d\d bytes"):
        PreferenceDataModule(**{**module.hparams, "strict": True}).setup("fit")
    kept = PreferenceDataModule(**{**module.hparams, "max_record_chars": 100})  # a limit on parsed records too
    kept.setup("fit")
    assert kept.data_report["train"]["dropped"] == {"too_large": 1}


def test_wrong_types_and_wrong_schemas(data, tmp_path):
    rows = [*GOOD, {"prompt": {"nested": "x"}, "chosen": [1, 2], "rejected": 3.5}]
    module = data({"train.jsonl": jsonl(rows)})
    assert module.data_report["train"]["dropped"] == {"not_a_string": 1}
    os.remove(tmp_path / "data" / "train.jsonl")
    numbers = pd.DataFrame({"prompt": ["a?"] * 3, "chosen": [1, 2, 3], "rejected": [4, 5, 6]})
    numbers.to_parquet(tmp_path / "data" / "train.parquet")
    with pytest.raises(UserError, match=r"no usable pairs.*train\.parquet row 0 field 'chosen': expected a string"):
        data({})
    pd.DataFrame({"question": ["a", "b"], "answer": ["c", "d"]}).to_parquet(tmp_path / "data" / "train.parquet")
    with pytest.raises(UserError, match=r"no usable pairs.*2 missing_field.*train\.parquet row 0 field 'chosen'"):
        data({})
    with pytest.raises(DataFileError, match=r"train\.parquet: cannot be read as parquet"):
        data({"train.parquet": b"PAR1 not really"})


def test_csv_with_newlines_inside_fields(data):
    rows = [*GOOD, {"prompt": "Line one\nline two?", "chosen": " first\r\nsecond", "rejected": ' no,\n"quoted"'}]
    module = data({"train.csv": csv_text(rows)})
    everything = [*module.train_data, *module.val_data]
    assert len(everything) == 7 and module.data_report["train"]["dropped"] == {}
    locations = sorted(r["location"].rsplit(" ", 1)[1] for r in everything)
    assert locations == [str(i) for i in range(7)]  # rows, not lines: the newlines stayed inside their fields


def test_globs_and_folders(tmp_path, data, tiny_model_dir):
    with pytest.raises(DataFileNotFound, match=r"nothing\*\.jsonl: the glob matches no files"):
        read_splits(str(tmp_path / "nothing*.jsonl"))
    files = {
        "train.jsonl": jsonl(GOOD[:2]),
        "train-2.csv": csv_text(GOOD[2:4]),
        "train-3.json": json.dumps(GOOD[4:]),
        "notes.txt": "not data",
        "images/cat.png": b"\x89PNG",
        ".cache/x.jsonl": "hidden: never data",
        "sub/val.jsonl": jsonl([{"prompt": "V?", "chosen": " v", "rejected": " w"}]),
    }
    with pytest.warns(UserWarning, match=r"ignoring 2 file\(s\) that are not .*: cat\.png, notes\.txt"):
        module = data(files, val_size=0.5)
    assert module.data_report["train"]["read"] == 6 and len(module.val_data) == 1
    pd.DataFrame(GOOD).to_parquet(tmp_path / "data" / "train-4.parquet")
    with pytest.warns(UserWarning, match=r"glob .*: ignoring 1 file\(s\) .*: notes\.txt"):
        splits = read_splits(str(tmp_path / "data" / "*"))
    assert sum(1 for _ in splits["train"]) == 12  # four formats under one glob


def test_a_file_that_disappears_after_listing(tmp_path):
    (tmp_path / "train.jsonl").write_text(jsonl(GOOD))
    (tmp_path / "train-2.jsonl").write_text(jsonl(GOOD))
    rows = read_splits(str(tmp_path))["train"]
    os.remove(tmp_path / "train-2.jsonl")
    with pytest.raises(DataFileNotFound, match=r"train-2\.jsonl: the file is gone"):
        rows.fingerprint()
    with pytest.raises(DataFileNotFound, match=r"train-2\.jsonl: the file is gone"):
        list(rows)


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory, embedded_model_dir):
    """A tiny GPT-2 (learned positions: an index past n_positions=32 fails inside the model)."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=32, n_embd=16, n_layer=1, n_head=2)
    path = tmp_path_factory.mktemp("gpt2")
    torch.manual_seed(0)
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_pairs_longer_than_the_model_are_cut_with_a_warning(gpt2_dir, make_data, make_trainer):
    module = DPOModule(model_name_or_path=str(gpt2_dir), lr_scheduler=None)
    data = make_data(model_dir=gpt2_dir, max_length=96, max_prompt_length=48)
    with pytest.warns(UserWarning, match=r"max_length=96 is longer than the 32 positions .* cut to 32 tokens"):
        make_trainer(max_steps=2).fit(module, data)
    assert data.longest_pair() <= 32 and module.trainer.global_step == 2


def test_a_data_module_set_up_alone_is_refused_before_any_step(gpt2_dir, make_data, make_trainer):
    data = make_data(model_dir=gpt2_dir, max_length=96, max_prompt_length=48)
    data.setup("fit")  # knows no model: nothing to cut to
    assert data.longest_pair() > 32
    with pytest.raises(SequenceTooLong, match=r"pairs of \d+ tokens but the model .* has 32 positions.*max_length"):
        make_trainer(max_steps=2).fit(DPOModule(model_name_or_path=str(gpt2_dir)), data)


def test_tokenizers_without_pad_or_eos(tmp_path, tiny_model_dir, make_data, make_trainer):
    from transformers import AutoTokenizer

    no_pad = AutoTokenizer.from_pretrained(tiny_model_dir)
    no_pad.pad_token = None
    no_pad.save_pretrained(tmp_path / "no-pad")
    data = make_data(model_dir=tmp_path / "no-pad")
    make_trainer(max_steps=1).fit(DPOModule(model_name_or_path=str(tiny_model_dir), lr_scheduler=None), data)
    assert data.tokenizer.pad_token == data.tokenizer.eos_token  # padding with EOS: masks come from lengths

    no_eos = AutoTokenizer.from_pretrained(tiny_model_dir)
    no_eos.eos_token = None
    no_eos.save_pretrained(tmp_path / "no-eos")
    with pytest.raises(TokenizerError, match=r"no-eos' has no EOS token"):
        make_data(model_dir=tmp_path / "no-eos").setup("fit")


def test_the_command_prints_one_line_and_no_traceback(tmp_path, capsys, tiny_model_dir):
    code = main(["data", f"--data.dataset={tmp_path}/missing*.jsonl", f"--model.model_name_or_path={tiny_model_dir}"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err
    assert err.strip().splitlines() == [
        f"lightning-dpo data: error: data file {tmp_path}/missing*.jsonl: the glob matches no files"
    ]
