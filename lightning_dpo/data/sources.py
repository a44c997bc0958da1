"""Reading preference rows from a Hugging Face dataset id, local files, globs or directories.

Every row travels with its *location* (``file.jsonl:12`` or ``org/name[train] row 12``) so that an error
about a bad record can name it. A line that is not valid JSON is not raised here: it becomes an
:class:`InvalidJSON` row, and the caller decides (skip and count, or stop in strict mode).

Every row source also has a ``fingerprint()``: a hash of the data it reads (file names and bytes, or the
``datasets`` fingerprint of a Hub split), so that tokenised data can be cached and reused safely.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lightning_dpo.embedded import is_embedded, resolve_dataset

LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
VALIDATION_SPLIT_NAMES = ("validation", "val", "valid", "dev", "test")

Row = tuple[str, Any]
"""(location, raw row)."""


class PreferenceDataError(ValueError):
    """A record that cannot be trained on, named by its source, record and field.

    ``kind`` is a short, stable name for the reason (``missing_field``, ``duplicate``, ...): the key under
    which skipped records are counted (see :data:`BAD_RECORD_KINDS`).
    """

    def __init__(self, location: str, field: str | None, reason: str, kind: str = "invalid") -> None:
        self.location, self.field, self.reason, self.kind = location, field, reason, kind
        where = f"{location}, field {field!r}" if field else location
        super().__init__(f"bad preference record at {where}: {reason}")


BAD_RECORD_KINDS = {
    "invalid_json": "a line that is not valid JSON",
    "not_a_record": "a JSON value that is not an object",
    "missing_field": "a missing or null field",
    "not_a_string": "a value of the wrong type (not a string, or not a list of messages)",
    "empty_prompt": "an empty prompt (or one whose tokens all merge into the completions)",
    "empty_completion": "completions empty on both sides, or a missing reply (strict: one empty side too)",
    "identical": "chosen identical to rejected",
    "duplicate": "an exact duplicate of an earlier record",
    "template_error": "a conversation that the chat template refuses (roles that do not alternate, ...)",
}
"""Reasons for which a record is skipped (or, with ``strict``, stops the run)."""


@dataclass(frozen=True)
class InvalidJSON:
    """A line of a JSON-lines file that does not parse: a row that is a bad record."""

    message: str


@dataclass
class DataSource:
    """One preference data source. A list of them in ``data.dataset`` is a mixture.

    Args:
        path: A Hugging Face dataset id, a local ``.json``/``.jsonl``/``.parquet``/``.csv`` file, a glob, a
            directory, or ``embedded:<name>``.
        config: The configuration name of a Hub data set that has several. ``None``: ``data.dataset_config``.
        split: The split to train on (or, in ``data.val_dataset``, to validate on). ``None``:
            ``data.train_split`` (``data.val_split``).
        weight: The share of this source in the training mixture: ``1`` takes every record once, ``0.5`` a
            seeded half of them, ``2`` every record twice. Validation always takes every record once.
        columns: Column names in this source by role, e.g. ``{prompt: question, chosen: good, rejected: bad}``.
            ``None``: ``data.columns``.
    """

    path: str
    config: str | None = None
    split: str | None = None
    weight: float = 1.0
    columns: dict[str, str] | None = None

    def __post_init__(self) -> None:
        if not self.weight >= 0:
            raise ValueError(f"data source {self.path!r}: weight must be >= 0, got {self.weight}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def as_sources(dataset: str | DataSource | Mapping | Iterable[DataSource | Mapping]) -> list[DataSource]:
    """``data.dataset`` in any accepted form -> a list of :class:`DataSource`."""
    if isinstance(dataset, str):
        return [DataSource(dataset)]
    if isinstance(dataset, DataSource):
        return [dataset]
    if isinstance(dataset, Mapping):
        return [DataSource(**dataset)]
    sources = [s if isinstance(s, DataSource) else DataSource(**s) for s in dataset]
    if not sources:
        raise ValueError("data.dataset is an empty list: name at least one source")
    return sources


def describe_dataset(dataset: str | DataSource | Mapping | Iterable[DataSource | Mapping]) -> str:
    """``data.dataset`` for people: its name, or each source of a mixture with its weight."""
    if isinstance(dataset, str):
        return repr(dataset)
    return " + ".join(f"{s.path} (weight {s.weight:g})" for s in as_sources(dataset))


def read_splits(source: str, config_name: str | None = None) -> dict[str, Iterable[Row]]:
    """Map split name -> rows.

    - ``embedded:<name>``: the bundled data directory;
    - a directory: its data files, grouped into splits by file-name stem (``train.jsonl``,
      ``val.jsonl``, ``test-00000-of-00001.parquet``); files whose stem names no split are ``train``.
      A directory laid out as a Hub repository (a ``README.md`` that declares ``configs:``), or any
      directory given a ``config_name``, is read by ``datasets.load_dataset`` like a Hub id;
    - a file or a glob: one ``train`` split;
    - anything else: a Hugging Face Hub id, loaded with ``datasets.load_dataset(source, config_name)``.
    """
    path = resolve_dataset(source)
    if os.path.isdir(path):
        if config_name is not None or _declares_configs(path):
            return _read_hub(path, config_name)
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


def fingerprint(rows: Iterable[Row]) -> str:
    """A hash of the data behind ``rows`` (see the module docstring); unknown iterables are hashed row by row."""
    if hasattr(rows, "fingerprint"):
        return rows.fingerprint()
    digest = hashlib.sha256()
    for location, row in rows:
        digest.update(json.dumps([location, row], sort_keys=True, default=repr).encode())
    return digest.hexdigest()


def _declares_configs(path: str) -> bool:
    card = Path(path) / "README.md"
    return card.is_file() and re.search(r"^configs:", card.read_text(encoding="utf-8"), re.MULTILINE) is not None


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

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for f in self.files:
            digest.update(os.path.abspath(f).encode() + b"\0")
            with open(f, "rb") as stream:
                for chunk in iter(lambda: stream.read(1 << 20), b""):
                    digest.update(chunk)
        return digest.hexdigest()


def _read_files(files: list[str]) -> Iterable[Row]:
    for f in files:
        if not f.endswith(LOCAL_SUFFIXES):
            raise ValueError(f"unsupported data file {f!r}; use one of {', '.join(LOCAL_SUFFIXES)}")
    return _LazyRows(files)


def _read_file(path: str) -> Iterator[Row]:
    if path.endswith(".jsonl") or (path.endswith(".json") and not _is_json_array(path)):
        yield from _read_json_lines(path)
    elif path.endswith(".json"):
        with open(path, encoding="utf-8-sig") as f:
            try:
                rows = json.load(f)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:  # a bad array has no records to skip to
                raise PreferenceDataError(path, None, f"invalid JSON ({e})", kind="invalid_json") from None
        for i, row in enumerate(rows):
            yield f"{path} record {i}", row
    else:
        import datasets

        kind = "parquet" if path.endswith(".parquet") else "csv"
        table = datasets.Dataset.from_parquet(path) if kind == "parquet" else datasets.Dataset.from_csv(path)
        for i, row in enumerate(table):
            yield f"{path} row {i}", row


def _read_json_lines(path: str) -> Iterator[Row]:
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            location = f"{path}:{line_no}"
            try:
                yield location, json.loads(raw.decode("utf-8-sig"))  # -sig: a byte-order mark
            except UnicodeDecodeError as e:
                yield location, InvalidJSON(f"invalid JSON (not UTF-8 at byte {e.start + 1})")
            except json.JSONDecodeError as e:
                yield location, InvalidJSON(f"invalid JSON ({e.msg} at column {e.colno})")


def _is_json_array(path: str) -> bool:
    with open(path, "rb") as f:
        head = f.read(1 << 16).removeprefix(b"\xef\xbb\xbf").lstrip()
    return head.startswith(b"[")


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

    def fingerprint(self) -> str:
        return f"{self.name}[{self.split}]:{self.dataset._fingerprint}"
