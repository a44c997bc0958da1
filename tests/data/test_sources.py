"""Sources: files, globs, directories and the Hub loader (exercised on a local path)."""

import json

import datasets
import pytest

from lightning_dpo.data.formats import to_example
from lightning_dpo.data.sources import (
    DataSource,
    InvalidJSON,
    PreferenceDataError,
    _read_hub,
    as_sources,
    fingerprint,
    read_splits,
)

ROWS = [{"prompt": f"Q{i}?", "chosen": f" good {i}", "rejected": f" bad {i}"} for i in range(4)]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_jsonl_rows_carry_file_and_line(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", ROWS[:2])
    rows = list(read_splits(str(tmp_path / "a.jsonl"))["train"])
    assert [loc for loc, _ in rows] == [f"{tmp_path}/a.jsonl:1", f"{tmp_path}/a.jsonl:2"]
    assert rows[1][1] == ROWS[1]


def test_invalid_json_is_a_row_named_by_its_line(tmp_path):
    lines = [json.dumps(ROWS[0]).encode(), b"{not json", b"\xff\xfe", json.dumps(ROWS[1]).encode()]
    (tmp_path / "bad.jsonl").write_bytes(b"\n".join(lines))
    rows = list(read_splits(str(tmp_path / "bad.jsonl"))["train"])
    assert [loc.rsplit(":", 1)[1] for loc, _ in rows] == ["1", "2", "3", "4"]
    assert isinstance(rows[1][1], InvalidJSON) and "invalid JSON" in rows[1][1].message
    assert "not UTF-8" in rows[2][1].message and rows[3][1] == ROWS[1]  # reading goes on after a bad line
    with pytest.raises(PreferenceDataError, match=r"bad.jsonl:2.*invalid JSON") as err:
        to_example(rows[1][1], rows[1][0])
    assert err.value.kind == "invalid_json"


def test_a_broken_json_array_names_the_file(tmp_path):
    (tmp_path / "a.json").write_text('[{"prompt": "x"}, {oops]')
    with pytest.raises(PreferenceDataError, match=r"a\.json.*invalid JSON"):
        list(read_splits(str(tmp_path / "a.json"))["train"])


def test_directory_groups_files_by_split(tmp_path):
    write_jsonl(tmp_path / "train.jsonl", ROWS[:3])
    (tmp_path / "test.json").write_text(json.dumps(ROWS[3:]))  # a JSON array
    datasets.Dataset.from_list(ROWS[:1]).to_parquet(str(tmp_path / "train-00001.parquet"))
    splits = read_splits(str(tmp_path))
    assert sorted(splits) == ["test", "train"]
    assert len(list(splits["train"])) == 4 and list(splits["test"])[0][1] == ROWS[3]


def test_glob_and_csv(tmp_path):
    datasets.Dataset.from_list(ROWS[:2]).to_csv(str(tmp_path / "part1.csv"), index=False)
    datasets.Dataset.from_list(ROWS[2:]).to_csv(str(tmp_path / "part2.csv"), index=False)
    rows = list(read_splits(str(tmp_path / "part*.csv"))["train"])
    assert [r["prompt"] for _, r in rows] == ["Q0?", "Q1?", "Q2?", "Q3?"]
    assert rows[2][0].endswith("part2.csv row 0")


def test_missing_local_paths_are_not_sent_to_the_hub(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_splits(str(tmp_path / "nope.jsonl"))
    with pytest.raises(FileNotFoundError, match="matches no files"):
        read_splits(str(tmp_path / "*.jsonl"))


def test_hub_loader_on_a_local_dataset_repository(tmp_path):
    # datasets.load_dataset resolves a local folder laid out like a Hub repository the same way as an id.
    (tmp_path / "data").mkdir()
    datasets.Dataset.from_list(ROWS[:3]).to_parquet(str(tmp_path / "data" / "train-00000-of-00001.parquet"))
    datasets.Dataset.from_list(ROWS[3:]).to_parquet(str(tmp_path / "data" / "test-00000-of-00001.parquet"))
    splits = _read_hub(str(tmp_path), None)
    assert sorted(splits) == ["test", "train"]
    location, row = list(splits["train"])[2]
    assert location == f"{tmp_path}[train] row 2" and row == ROWS[2]


def test_a_hub_layout_directory_with_configs_and_splits(tmp_path):
    # A local copy of a Hub repository whose card declares configs, read through datasets.load_dataset.
    for config, offset in (("small", 0), ("big", 2)):
        (tmp_path / config).mkdir()
        datasets.Dataset.from_list(ROWS[offset : offset + 2]).to_parquet(str(tmp_path / config / "train_prefs.parquet"))
        datasets.Dataset.from_list(ROWS[offset : offset + 1]).to_parquet(str(tmp_path / config / "test_prefs.parquet"))
    card = ["---", "configs:"]
    for config in ("small", "big"):
        card += [f"- config_name: {config}", "  data_files:"]
        card += [f"  - split: {s}\n    path: {config}/{s}.parquet" for s in ("train_prefs", "test_prefs")]
    (tmp_path / "README.md").write_text("\n".join(card + ["---", ""]))
    splits = read_splits(str(tmp_path), "big")
    assert sorted(splits) == ["test_prefs", "train_prefs"]
    assert [row for _, row in splits["train_prefs"]] == ROWS[2:4]
    assert fingerprint(splits["train_prefs"]) != fingerprint(read_splits(str(tmp_path), "small")["train_prefs"])


def test_sources_from_strings_dicts_and_dataclasses():
    assert as_sources("a") == [DataSource("a")]
    assert as_sources([{"path": "a", "weight": 2}, DataSource("b", split="x")]) == [
        DataSource("a", weight=2),
        DataSource("b", split="x"),
    ]
    with pytest.raises(ValueError, match="weight"):
        DataSource("a", weight=-1)
    with pytest.raises(ValueError, match="empty"):
        as_sources([])


def test_file_fingerprints_follow_the_bytes(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", ROWS[:2])
    before = fingerprint(read_splits(str(tmp_path / "a.jsonl"))["train"])
    assert fingerprint(read_splits(str(tmp_path / "a.jsonl"))["train"]) == before
    write_jsonl(tmp_path / "a.jsonl", ROWS[:3])
    assert fingerprint(read_splits(str(tmp_path / "a.jsonl"))["train"]) != before
