"""Sources: files, globs, directories and the Hub loader (exercised on a local path)."""

import json

import datasets
import pytest

from lightning_dpo.data.sources import PreferenceDataError, _read_hub, read_splits

ROWS = [{"prompt": f"Q{i}?", "chosen": f" good {i}", "rejected": f" bad {i}"} for i in range(4)]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_jsonl_rows_carry_file_and_line(tmp_path):
    write_jsonl(tmp_path / "a.jsonl", ROWS[:2])
    rows = list(read_splits(str(tmp_path / "a.jsonl"))["train"])
    assert [loc for loc, _ in rows] == [f"{tmp_path}/a.jsonl:1", f"{tmp_path}/a.jsonl:2"]
    assert rows[1][1] == ROWS[1]


def test_invalid_json_names_the_line(tmp_path):
    (tmp_path / "bad.jsonl").write_text(json.dumps(ROWS[0]) + "\n{not json\n")
    with pytest.raises(PreferenceDataError, match=r"bad.jsonl:2.*invalid JSON"):
        list(read_splits(str(tmp_path / "bad.jsonl"))["train"])


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
