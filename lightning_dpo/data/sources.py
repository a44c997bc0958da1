"""Reading preference rows from a Hugging Face dataset id, local files, globs or directories.

Every row travels with its *location* (``file.jsonl:12`` or ``org/name[train] row 12``) so that an error
about a bad record can name it. A line that is not valid JSON, or a record larger than ``max_record_chars``,
is not raised here: it becomes an :class:`InvalidJSON` row (with its ``kind``), and the caller decides (skip
and count, or stop in strict mode).

A bad *file* (one that disappeared, cannot be parsed as its format, is not UTF-8 where text is required, or a
glob that matches nothing) raises :class:`DataFileError`: one line naming the file (and the line, where one
is known), which the ``lightning-dpo`` command prints without a traceback. Files that a directory or glob
holds but that are not data (``notes.txt``) are listed in a warning, never dropped unsaid; a ``.jsonl`` file
that holds one JSON array is read as the array, with a warning.

Every row source also has a ``fingerprint()``: a hash of the data it reads (file names and bytes, or the
``datasets`` fingerprint of a Hub split), so that tokenised data can be cached and reused safely.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import re
import warnings
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from lightning_dpo.embedded import is_embedded, resolve_dataset
from lightning_dpo.errors import UserError

LOCAL_SUFFIXES = (".jsonl", ".json", ".parquet", ".csv")
MAX_RECORD_CHARS = 4_000_000
"""The default ``data.max_record_chars``: a record larger than this (its JSON line in bytes, or the characters
of its strings) is skipped and counted as ``too_large``. Tokenising one 50 MB record took 3 minutes and 16 GB
of memory, to keep its first ``max_length`` tokens."""
VALIDATION_SPLIT_NAMES = ("validation", "val", "valid", "dev", "test")

Row = tuple[str, Any]
"""(location, raw row)."""


class PreferenceDataError(UserError, ValueError):
    """A record that cannot be trained on, named by its source, record and field.

    ``kind`` is a short, stable name for the reason (``missing_field``, ``duplicate``, ...): the key under
    which skipped records are counted (see :data:`BAD_RECORD_KINDS`).
    """

    def __init__(self, location: str, field: str | None, reason: str, kind: str = "invalid") -> None:
        self.location, self.field, self.reason, self.kind = location, field, reason, kind
        where = f"{location}, field {field!r}" if field else location
        super().__init__(f"bad preference record at {where}: {reason}")


class DataFileError(UserError, ValueError):
    """A data file (or glob) that cannot be read at all, named with the line or record where one is known."""

    def __init__(self, path: str, reason: str) -> None:
        self.path, self.reason = path, reason
        super().__init__(f"data file {path}: {reason}")


class DataFileNotFound(DataFileError, FileNotFoundError):
    """A data file, directory or glob that is not there (or no longer)."""


BAD_RECORD_KINDS = {
    "invalid_json": "a line that is not valid JSON (or not UTF-8)",
    "too_large": "a record larger than data.max_record_chars",
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
    """A row that is a bad record before it is parsed: a line that is not JSON (``invalid_json``), or a record
    over ``max_record_chars`` (``too_large``)."""

    message: str
    kind: str = "invalid_json"


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


def sources_as_hparams(dataset: Any) -> Any:
    """``data.dataset`` as it is saved in hyperparameters and checkpoints: a string stays one, sources become
    plain dicts (``None`` stays ``None``)."""
    if dataset is None or isinstance(dataset, str):
        return dataset
    return [s.to_dict() for s in as_sources(dataset)]


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


def read_splits(
    source: str, config_name: str | None = None, max_record_chars: int | None = MAX_RECORD_CHARS
) -> dict[str, Iterable[Row]]:
    """Map split name -> rows.

    - ``embedded:<name>``: the bundled data directory;
    - a directory: its data files, grouped into splits by file-name stem (``train.jsonl``,
      ``val.jsonl``, ``test-00000-of-00001.parquet``); files whose stem names no split are ``train``.
      A directory laid out as a Hub repository (a ``README.md`` that declares ``configs:``), or any
      directory given a ``config_name``, is read by ``datasets.load_dataset`` like a Hub id;
    - a file or a glob: one ``train`` split;
    - anything else: a Hugging Face Hub id, loaded with ``datasets.load_dataset(source, config_name)``.

    ``max_record_chars``: records larger than this become ``too_large`` bad records (``None``: no limit).
    """
    path = resolve_dataset(source)
    if os.path.isdir(path):
        if config_name is not None or _declares_configs(path):
            return _read_hub(path, config_name, max_record_chars)
        found = sorted(str(f) for f in Path(path).rglob("*") if f.is_file() and not _hidden(f, Path(path)))
        files = _data_files(found, f"directory {source!r}")
        if not files:
            raise DataFileNotFound(path, f"no {'/'.join(LOCAL_SUFFIXES)} files in this directory")
        return _group_by_split(files, max_record_chars)
    if os.path.isfile(path):
        if not path.endswith(LOCAL_SUFFIXES):
            raise DataFileError(path, f"unsupported file type; use one of {', '.join(LOCAL_SUFFIXES)}")
        return {"train": _LazyRows([path], max_record_chars)}
    if glob.has_magic(path):
        matched = sorted(f for f in glob.glob(path, recursive=True) if os.path.isfile(f))
        if not matched:
            raise DataFileNotFound(path, "the glob matches no files")
        files = _data_files(matched, f"glob {source!r}")
        if not files:
            raise DataFileNotFound(path, f"the glob matches no {'/'.join(LOCAL_SUFFIXES)} files, only others")
        return {"train": _LazyRows(files, max_record_chars)}
    if is_embedded(source) or path.endswith(LOCAL_SUFFIXES) or path.startswith((".", "/")):
        raise DataFileNotFound(path, "neither an existing file, directory nor glob")
    return _read_hub(source, config_name, max_record_chars)


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


def _hidden(path: Path, root: Path) -> bool:
    """A dot-file or anything in a dot-folder (``.cache/``, ``.git/``) below ``root``: never data."""
    return any(part.startswith(".") for part in path.relative_to(root).parts)


def _data_files(files: list[str], where: str) -> list[str]:
    """The data files among ``files``; the others are named in a warning (nothing is left out unsaid)."""
    other = [f for f in files if not f.endswith(LOCAL_SUFFIXES) and Path(f).name.lower() != "readme.md"]
    if other:
        names = ", ".join(Path(f).name for f in other[:5]) + (f" and {len(other) - 5} more" if len(other) > 5 else "")
        warnings.warn(
            f"{where}: ignoring {len(other)} file(s) that are not {'/'.join(LOCAL_SUFFIXES)}: {names}", stacklevel=3
        )
    return [f for f in files if f.endswith(LOCAL_SUFFIXES)]


def _group_by_split(files: list[str], max_record_chars: int | None) -> dict[str, Iterable[Row]]:
    groups: dict[str, list[str]] = defaultdict(list)
    for f in files:
        stem = re.split(r"[.\-_]", Path(f).name, maxsplit=1)[0].lower()
        known = ("train", *VALIDATION_SPLIT_NAMES)
        groups[stem if stem in known else "train"].append(f)
    return {split: _LazyRows(group, max_record_chars) for split, group in groups.items()}


class _LazyRows:
    """Re-iterable rows of a list of files, read only when iterated."""

    def __init__(self, files: list[str], max_record_chars: int | None = MAX_RECORD_CHARS) -> None:
        self.files = files
        self.max_record_chars = max_record_chars

    def __iter__(self) -> Iterator[Row]:
        for f in self.files:
            with _readable(f):
                for location, row in _read_file(f, self.max_record_chars):
                    yield location, _limit(row, location, self.max_record_chars)

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for f in self.files:
            digest.update(os.path.abspath(f).encode() + b"\0")
            with _readable(f), open(f, "rb") as stream:
                for chunk in iter(lambda: stream.read(1 << 20), b""):
                    digest.update(chunk)
        return digest.hexdigest()


class _readable:
    """Turns the OS errors of reading ``path`` into a :class:`DataFileError` that names it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type | None, error: BaseException | None, traceback: Any) -> bool:
        if isinstance(error, FileNotFoundError) and not isinstance(error, DataFileError):
            raise DataFileNotFound(self.path, "the file is gone (deleted or moved after it was listed)") from None
        if isinstance(error, (PermissionError, IsADirectoryError)):
            raise DataFileError(self.path, f"cannot read it ({error.strerror})") from None
        return False


def _read_file(path: str, max_record_chars: int | None) -> Iterator[Row]:
    json_array = path.endswith((".json", ".jsonl")) and _is_json_array(path)
    if json_array and path.endswith(".jsonl"):
        warnings.warn(f"{path} holds a JSON array, not JSON lines: reading it as an array", stacklevel=2)
    if path.endswith((".jsonl", ".json")) and not json_array:
        yield from _read_json_lines(path, max_record_chars)
    elif json_array:
        with open(path, "rb") as f:
            try:
                rows = json.loads(f.read().decode("utf-8-sig"))
            except UnicodeDecodeError as e:  # a bad array has no records to skip to
                raise PreferenceDataError(path, None, f"not UTF-8 at byte {e.start + 1}", kind="invalid_json") from None
            except json.JSONDecodeError as e:
                raise PreferenceDataError(path, None, f"invalid JSON ({e})", kind="invalid_json") from None
        for i, row in enumerate(rows):
            yield f"{path} record {i}", row
    else:
        yield from _read_table(path)


def _read_table(path: str) -> Iterator[Row]:
    """Rows of a Parquet or CSV file (through ``datasets``), or a :class:`DataFileError` naming what is wrong."""
    import datasets

    try:
        if path.endswith(".parquet"):
            table = datasets.Dataset.from_parquet(path)
        else:
            _check_utf8(path)
            table = datasets.Dataset.from_csv(path, encoding="utf-8-sig")  # -sig: a byte-order mark
    except DataFileError:
        raise
    except FileNotFoundError:
        raise
    except Exception as e:  # pyarrow / pandas / datasets errors: the file is not what its name says
        cause = e.__cause__ or e.__context__ or e
        raise DataFileError(
            path, f"cannot be read as {Path(path).suffix[1:]} ({type(cause).__name__}: {cause})"
        ) from None
    for i, row in enumerate(table):
        yield f"{path} row {i}", row


def _check_utf8(path: str) -> None:
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataFileError(
                    f"{path}:{line_no}",
                    f"not UTF-8 (byte {raw[e.start]:#04x} at column {e.start + 1}); save it as UTF-8",
                ) from None


def _read_json_lines(path: str, max_record_chars: int | None) -> Iterator[Row]:
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if not raw.strip():
                continue
            location = f"{path}:{line_no}"
            if max_record_chars is not None and len(raw) > max_record_chars:
                yield location, _too_large(len(raw), "bytes", max_record_chars)  # not even parsed
                continue
            try:
                yield location, json.loads(raw.decode("utf-8-sig"))  # -sig: a byte-order mark
            except UnicodeDecodeError as e:
                yield location, InvalidJSON(f"invalid JSON (not UTF-8 at byte {e.start + 1})")
            except json.JSONDecodeError as e:
                yield location, InvalidJSON(f"invalid JSON ({e.msg} at column {e.colno})")


def _too_large(size: int, unit: str, limit: int) -> InvalidJSON:
    return InvalidJSON(
        f"a record of {size:,} {unit}, over data.max_record_chars={limit:,} (raise it to keep such records)",
        kind="too_large",
    )


def _limit(row: Any, location: str, max_record_chars: int | None) -> Any:
    """``row``, or a ``too_large`` bad row when its strings hold more than ``max_record_chars`` characters."""
    if max_record_chars is None or isinstance(row, InvalidJSON):
        return row
    size = _chars(row)
    return _too_large(size, "characters", max_record_chars) if size > max_record_chars else row


def _chars(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, Mapping):
        return sum(_chars(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_chars(v) for v in value)
    return 0


def _is_json_array(path: str) -> bool:
    """Whether ``path`` holds one JSON array. A ``.jsonl`` file qualifies only when the whole file parses as one:
    JSON lines whose first record happens to be an array (a bad record, skipped and counted) are still lines."""
    with open(path, "rb") as f:
        head = f.read(1 << 16).removeprefix(b"\xef\xbb\xbf").lstrip()
    if not head.startswith(b"["):
        return False
    if path.endswith(".json"):
        return True
    try:
        with open(path, "rb") as f:
            return isinstance(json.loads(f.read().decode("utf-8-sig")), list)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return False


def _read_hub(
    name: str, config_name: str | None, max_record_chars: int | None = MAX_RECORD_CHARS
) -> dict[str, Iterable[Row]]:
    import datasets

    dataset_dict = datasets.load_dataset(name, config_name)
    return {split: _HubRows(name, split, ds, max_record_chars) for split, ds in dataset_dict.items()}


class _HubRows:
    def __init__(self, name: str, split: str, dataset: Any, max_record_chars: int | None = MAX_RECORD_CHARS) -> None:
        self.name, self.split, self.dataset, self.max_record_chars = name, split, dataset, max_record_chars

    def __iter__(self) -> Iterator[Row]:
        for i, row in enumerate(self.dataset):
            location = f"{self.name}[{self.split}] row {i}"
            yield location, _limit(row, location, self.max_record_chars)

    def fingerprint(self) -> str:
        return f"{self.name}[{self.split}]:{self.dataset._fingerprint}"
