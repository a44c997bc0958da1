"""Property tests on whole files: random records written in any supported format, with a byte-order mark,
Windows line ends, a non-UTF-8 byte, a JSON array where JSON lines were expected, and non-data files beside
them. Loading either stops with one ``UserError`` that names the data file, or accounts for every record
written: read = kept + dropped, and every kept pair names its file."""

from __future__ import annotations

import csv
import json
import tempfile
import warnings
from pathlib import Path

import pandas as pd
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from lightning_dpo import PreferenceDataModule
from lightning_dpo.errors import UserError

text = st.lists(st.sampled_from(list('ab .?,"\n\r\t') + ["é", "</s>", "Human:", "\u2028"]), max_size=8).map("".join)
words = st.lists(st.sampled_from(["yes", "no", "maybe", "Paris", "ok."]), min_size=1, max_size=5).map(
    lambda w: " " + " ".join(w)
)
field = st.one_of(st.none(), text, words, words)
good = st.fixed_dictionaries({"prompt": words, "chosen": words, "rejected": words})
table_record = st.one_of(good, good, st.fixed_dictionaries({"prompt": field, "chosen": field, "rejected": field}))
json_value = st.one_of(field, st.integers(), st.lists(st.integers(), max_size=2))
json_record = st.one_of(
    table_record,
    st.fixed_dictionaries({}, optional={"prompt": json_value, "chosen": json_value, "rejected": json_value}),
)

layouts = st.fixed_dictionaries(
    {
        "format": st.sampled_from(["jsonl", "json", "csv", "parquet", "array-in-jsonl"]),
        "bom": st.booleans(),
        "crlf": st.booleans(),
        "bad_byte": st.booleans(),  # one record's text gets a byte that is not UTF-8
        "other_file": st.booleans(),
    }
)
PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def write(folder: Path, records: list, layout: dict) -> tuple[Path, int]:
    """The train file, and how many records a reader must account for."""
    fmt = layout["format"]
    suffix = {"array-in-jsonl": "jsonl"}.get(fmt, fmt)
    path = folder / f"train.{suffix}"
    if fmt == "parquet":
        pd.DataFrame(records, columns=["prompt", "chosen", "rejected"]).to_parquet(path)
        return path, len(records)
    if fmt == "csv":
        # Every field quoted: a CR inside a field must be (RFC 4180), and pandas' minimal quoting leaves a bare CR
        # unquoted, which every CSV reader takes for a line end.
        frame = pd.DataFrame(records, columns=["prompt", "chosen", "rejected"])
        data, count = frame.to_csv(index=False, quoting=csv.QUOTE_ALL), len(records)
    elif fmt == "jsonl":
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        count = len(records)
    else:
        data, count = json.dumps(records, ensure_ascii=False, indent=1 if layout["crlf"] else None), len(records)
    if layout["crlf"]:
        data = data.replace("\n", "\r\n")
    raw = (("\ufeff" if layout["bom"] else "") + data).encode("utf-8")
    if layout["bad_byte"] and b"yes" in raw:
        raw = raw.replace(b"yes", b"y\xffs", 1)
    path.write_bytes(raw)
    return path, count


@PROPERTY
@given(records=st.lists(json_record, min_size=1, max_size=20), layout=layouts)
def test_every_record_of_a_file_is_accounted_for_or_the_file_is_named(records, layout, bos_chat_tokenizer_dir):
    if layout["format"] in ("csv", "parquet"):
        records = [{k: v for k, v in r.items() if v is None or isinstance(v, str)} for r in records]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "data"
        folder.mkdir()
        path, count = write(folder, records, layout)
        (folder / "val.jsonl").write_text(json.dumps({"prompt": "Q?", "chosen": " yes", "rejected": " no"}) + "\n")
        if layout["other_file"]:
            (folder / "notes.txt").write_text("not data")
        data = PreferenceDataModule(
            dataset=str(folder),
            tokenizer_name_or_path=str(bos_chat_tokenizer_dir),
            cache_dir=str(Path(tmp) / "cache"),
            max_length=32,
            max_prompt_length=16,
            batch_size=2,
        )
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                data.setup("fit")
            except UserError as error:
                message = str(error)
                event(f"refused: {type(error).__name__}")
                assert str(path) in message, message  # the file is named
                assert "\n" not in message.strip() or "no usable pairs" in message
                return
        report = data.data_report["train"]
        event(f"loaded: {layout['format']}")
        assert report["read"] == count
        assert report["kept"] + sum(report["dropped"].values()) == count
        assert all(location.startswith(str(path)) for location in data.train_data["location"])
        if layout["other_file"]:
            assert any("notes.txt" in str(w.message) for w in caught)  # named, not silently skipped
        if layout["format"] == "array-in-jsonl":
            assert any("holds a JSON array" in str(w.message) for w in caught)
