"""Reading preference rows from a Hugging Face dataset id, local files, globs or directories.

Every row travels with its *location* (``file.jsonl:12`` or ``org/name[train] row 12``) so that an error
about a bad record can name it.
"""

from __future__ import annotations

import glob
import json
import os
import re
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable, Iterator

from lightning_dpo.embedded import is_embedded, resolve_dataset

LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
VALIDATION_SPLIT_NAMES = ("validation", "val", "valid", "dev", "test")

Row = tuple[str, Any]
"""(location, raw row)."""


class PreferenceDataError(ValueError):
    """A record that cannot be trained on, named by its source, record and field."""

    def __init__(self, location: str, field: str | None, reason: str) -> None:
        self.location, self.field, self.reason = location, field, reason
        where = f"{location}, field {field!r}" if field else location
        super().__init__(f"bad preference record at {where}: {reason}")


def read_splits(source: str, config_name: str | None = None) -> dict[str, Iterable[Row]]:
    """Map split name -> rows.

    - ``embedded:<name>``: the bundled data directory;
    - a directory: its data files, grouped into splits by file-name stem (``train.jsonl``,
      ``val.jsonl``, ``test-00000-of-00001.parquet``); files whose stem names no split are ``train``;
    - a file or a glob: one ``train`` split;
    - anything else: a Hugging Face Hub id, loaded with ``datasets.load_dataset(source, config_name)``.
    """
    path = resolve_dataset(source)
    if os.path.isdir(path):
        files = sorted(
            str(f) for f in Path(path).rglob("*") if f.suffix in LOCAL_SUFFIXES and f.name.lower() != "readme.md"
        )
        if not files:
            raise FileNotFoundError(f"no {'/'.join(LOCAL_SUFFIXES)} files in directory {source!r}")
        return _group_by_split(files)
    if os.path.isfile(path):
        return {"train": _read_files([path])}
    if glob.has_magic(path):
        files = sorted(f for f in glob.glob(path, recursive=True) if os.path.isfile(f))
        if not files:
            raise FileNotFoundError(f"the glob {source!r} matches no files")
        return {"train": _read_files(files)}
    if is_embedded(source) or path.endswith(LOCAL_SUFFIXES) or path.startswith((".", "/")):
        raise FileNotFoundError(f"dataset {source!r} is neither an existing file, directory nor glob")
    return _read_hub(source, config_name)


def _group_by_split(files: list[str]) -> dict[str, Iterable[Row]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for f in files:
        stem = re.split(r"[.\-_]", Path(f).name, maxsplit=1)[0].lower()
        known = ("train", *VALIDATION_SPLIT_NAMES)
        groups[stem if stem in known else "train"].append(f)
    return {split: _read_files(group) for split, group in groups.items()}


class _LazyRows:
    """Re-iterable rows of a list of files, read only when iterated."""

    def __init__(self, files: list[str]) -> None:
        self.files = files

    def __iter__(self) -> Iterator[Row]:
        for f in self.files:
            yield from _read_file(f)


def _read_files(files: list[str]) -> Iterable[Row]:
    for f in files:
        if not f.endswith(LOCAL_SUFFIXES):
            raise ValueError(f"unsupported data file {f!r}; use one of {', '.join(LOCAL_SUFFIXES)}")
    return _LazyRows(files)


def _read_file(path: str) -> Iterator[Row]:
    if path.endswith(".jsonl") or (path.endswith(".json") and not _is_json_array(path)):
        yield from _read_json_lines(path)
    elif path.endswith(".json"):
        with open(path, encoding="utf-8") as f:
            rows = json.load(f)
        for i, row in enumerate(rows):
            yield f"{path} record {i}", row
    else:
        import datasets

        kind = "parquet" if path.endswith(".parquet") else "csv"
        table = datasets.Dataset.from_parquet(path) if kind == "parquet" else datasets.Dataset.from_csv(path)
        for i, row in enumerate(table):
            yield f"{path} row {i}", row


def _read_json_lines(path: str) -> Iterator[Row]:
    with open(path, encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            location = f"{path}:{line_no}"
            try:
                yield location, json.loads(line)
            except json.JSONDecodeError as e:
                raise PreferenceDataError(location, None, f"invalid JSON ({e.msg} at column {e.colno})") from None


def _is_json_array(path: str) -> bool:
    with open(path, encoding="utf-8") as f:
        for chunk in iter(lambda: f.read(1), ""):
            if not chunk.isspace():
                return chunk == "["
    return False


def _read_hub(name: str, config_name: str | None) -> dict[str, Iterable[Row]]:
    import datasets

    dataset_dict = datasets.load_dataset(name, config_name)
    return {split: _HubRows(name, split, ds) for split, ds in dataset_dict.items()}


class _HubRows:
    def __init__(self, name: str, split: str, dataset: Any) -> None:
        self.name, self.split, self.dataset = name, split, dataset

    def __iter__(self) -> Iterator[Row]:
        for i, row in enumerate(self.dataset):
            yield f"{self.name}[{self.split}] row {i}", row
