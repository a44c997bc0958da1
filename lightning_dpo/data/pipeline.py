"""Rows -> a tokenised split, counting every record that is left out and why.

    sources --normalise--> examples (validated, deduplicated) --datasets.map(num_proc)--> token ids
            --drop--> pairs with >= 1 completion token on each side

A bad record (``BAD_RECORD_KINDS``) is skipped and counted; with ``strict`` the first one raises
:class:`PreferenceDataError`. A record with one empty completion is kept (its tokens are the EOS alone)
and counted in ``empty_completions``; ``strict`` refuses it too. A pair that truncation leaves without a
completion token on a side is dropped and counted as ``no_completion_tokens`` (never raised: it is a
length setting, not bad data). The tally is a plain dict, stored beside the cached tokens, so a cached run
reports the same counts (and a strict run over a cache made without ``strict`` raises the same error).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import datasets
import numpy as np
from transformers import PreTrainedTokenizerBase

from lightning_dpo.data.arrow import column
from lightning_dpo.data.formats import (
    ROLES,
    empty_sides,
    example_from_columns,
    example_key,
    example_to_columns,
    to_example,
)
from lightning_dpo.data.sources import BAD_RECORD_KINDS, PreferenceDataError, Row
from lightning_dpo.data.templates import require_template
from lightning_dpo.data.tokenize import tokenize_examples
from lightning_dpo.data.truncation import EncodingProblem, TokenSettings

NO_COMPLETION = "no_completion_tokens"
FIRST_PER_KIND = 5  # dropped records remembered per reason, for messages

TOKEN_FEATURES = datasets.Features(
    {
        "location": datasets.Value("string"),  # file:line or dataset[split] row i
        "source": datasets.Value("int32"),  # index of the source in the split's mixture
        "prompt_input_ids": datasets.List(datasets.Value("int32")),
        "chosen_input_ids": datasets.List(datasets.Value("int32")),
        "rejected_input_ids": datasets.List(datasets.Value("int32")),
        "prompt_length": datasets.Value("int32"),  # before truncation
        "chosen_length": datasets.Value("int32"),
        "rejected_length": datasets.Value("int32"),
        "length": datasets.Value("int32"),  # after truncation: prompt + the longer completion
        "truncated": datasets.Value("bool"),
    }
)
_MAP_FEATURES = datasets.Features(
    {
        **TOKEN_FEATURES,
        "dropped": datasets.Value("bool"),
        "problem_kind": datasets.Value("string"),
        "problem": datasets.Value("string"),
    }
)


@dataclass
class SplitSource:
    """The rows of one source of a split, and how to read them."""

    name: str  # shown in reports
    rows: Iterable[Row]
    weight: float = 1.0
    columns: dict[str, str] | None = None


class Tally:
    """Records read and dropped, by reason, with the first few dropped of each reason; records kept with an
    empty completion, by side, with the first few of them.

    An entry found while reading rows carries ``index``, the record's place in the split's reading order, so
    that :func:`first_bad_record` can tell which one a strict run meets first.
    """

    def __init__(self) -> None:
        self.read = 0
        self.dropped: Counter[str] = Counter()
        self.first: list[dict[str, Any]] = []
        self.empty: Counter[str] = Counter()
        self.first_empty: list[dict[str, Any]] = []

    def drop(self, kind: str, location: str, field: str | None, message: str, index: int | None = None) -> None:
        self.dropped[kind] += 1
        if self.dropped[kind] <= FIRST_PER_KIND:
            entry = {"kind": kind, "location": location, "field": field, "message": message}
            self.first.append(entry if index is None else {**entry, "index": index})

    def keep_empty(self, sides: list[str], location: str, field: str, index: int) -> None:
        for side in sides:
            self.empty[side] += 1
        if len(self.first_empty) < FIRST_PER_KIND:
            self.first_empty.append(
                {
                    "kind": "empty_completion",
                    "location": location,
                    "field": field,
                    "message": EMPTY_KEPT,
                    "index": index,
                }
            )

    def to_dict(self, kept: int, sources: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "read": self.read,
            "kept": kept,
            "dropped": dict(sorted(self.dropped.items())),
            "first_dropped": self.first,  # in the order found: every bad record before any NO_COMPLETION
            "empty_completions": {"chosen": self.empty["chosen"], "rejected": self.empty["rejected"]},
            "first_empty": self.first_empty,
            "sources": sources,
        }


EMPTY_KEPT = (
    "the completion is empty; data.strict refuses it (without strict it is kept as an EOS-only completion: "
    "saying nothing can be the preferred answer)"
)


def build_split(
    sources: list[SplitSource],
    tokenizer: PreTrainedTokenizerBase,
    settings: TokenSettings,
    *,
    system_prompt: str | None = None,
    strict: bool = False,
    num_proc: int | None = None,
    fingerprint: str | None = None,
    desc: str = "tokenizing",
) -> tuple[datasets.Dataset, dict[str, Any]]:
    """Normalise, deduplicate and tokenise the rows of one split; return (tokens, tally dict)."""
    columns, tally, per_source = normalise(sources, system_prompt=system_prompt, strict=strict)
    if "chat" in columns["kind"]:
        require_template(tokenizer, settings.chat_template)  # a missing template is a setting, not a record
    table = datasets.Dataset.from_dict(columns)
    if len(table):
        procs = num_proc if num_proc is not None else min(os.cpu_count() or 1, len(table) // 10_000)
        table = table.map(
            tokenize_batch,
            fn_kwargs={"tokenizer": tokenizer, "settings": settings},
            batched=True,
            batch_size=1000,
            num_proc=procs if procs > 1 else None,
            remove_columns=["kind", *ROLES],
            features=_MAP_FEATURES,
            new_fingerprint=fingerprint,  # the cache key: spares datasets from hashing the tokenizer
            desc=desc,
        )
    else:
        table = datasets.Dataset.from_dict({k: [] for k in _MAP_FEATURES}, features=_MAP_FEATURES)
    keep = _drop_unusable(table, sources, tally, settings, strict)
    data = table.select(keep).remove_columns(["dropped", "problem_kind", "problem"])
    kept = Counter(column(data, "source").tolist())
    for i, entry in enumerate(per_source):
        entry["kept"] = kept.get(i, 0)
    return data, tally.to_dict(len(data), per_source)


def normalise(
    sources: list[SplitSource], *, system_prompt: str | None = None, strict: bool = False
) -> tuple[dict[str, list], Tally, list[dict[str, Any]]]:
    """Rows -> columns of valid, unique examples (conversations as JSON strings), the tally, per-source counts."""
    columns: dict[str, list] = {"location": [], "source": [], "kind": [], **{role: [] for role in ROLES}}
    seen: dict[Any, str] = {}
    tally = Tally()
    per_source = []
    for index, source in enumerate(sources):
        read_before = tally.read
        for location, row in source.rows:
            tally.read += 1
            position = tally.read - 1
            try:
                example = to_example(row, location, source.columns, system_prompt)
                key = example_key(example)
                if key in seen:
                    raise PreferenceDataError(location, None, f"exact duplicate of {seen[key]}", kind="duplicate")
            except PreferenceDataError as e:
                if strict:
                    raise
                tally.drop(e.kind, e.location, e.field, e.reason, index=position)
                continue
            if sides := empty_sides(example):
                field = (source.columns or {}).get(sides[0], sides[0])
                if strict:
                    raise PreferenceDataError(location, field, EMPTY_KEPT, kind="empty_completion")
                tally.keep_empty(sides, location, field, position)
            seen[key] = location
            columns["location"].append(location)
            columns["source"].append(index)
            for name, value in example_to_columns(example).items():
                columns[name].append(value)
        per_source.append({"name": source.name, "weight": source.weight, "read": tally.read - read_before})
    return columns, tally, per_source


def tokenize_batch(
    batch: dict[str, list], tokenizer: PreTrainedTokenizerBase, settings: TokenSettings
) -> dict[str, list]:
    """``datasets.map`` function: a batch of normalised columns -> token columns (``_MAP_FEATURES``)."""
    names = ("kind", *ROLES)
    examples = [example_from_columns(dict(zip(names, values))) for values in zip(*(batch[k] for k in names))]
    out: dict[str, list] = {k: [] for k in _MAP_FEATURES if k not in ("location", "source")}
    for e in tokenize_examples(examples, tokenizer, settings):
        if isinstance(e, EncodingProblem):
            row = dict(
                prompt_input_ids=[],
                chosen_input_ids=[],
                rejected_input_ids=[],
                prompt_length=0,
                chosen_length=0,
                rejected_length=0,
                length=0,
                truncated=False,
                dropped=True,
            )
            row.update(problem_kind=e.kind, problem=e.message)
        else:
            row = {**e, "problem_kind": "", "problem": ""}
        for k, v in row.items():
            out[k].append(v)
    return out


def _drop_unusable(
    table: datasets.Dataset, sources: list[SplitSource], tally: Tally, settings: TokenSettings, strict: bool
) -> np.ndarray:
    """Count (or, strict, raise on) encoding problems and pairs without completion tokens; return the rest."""
    dropped = column(table, "dropped").astype(bool)  # (N,) encoding problems and empty sides
    if not dropped.any():
        return np.arange(len(table))
    rows = table.select(np.flatnonzero(dropped)).select_columns(["location", "source", "problem_kind", "problem"])
    rows = rows.with_format("arrow")[:].to_pylist()
    limit = f"max_length={settings.max_length} (truncation_mode={settings.truncation_mode})"
    for row in rows:  # encoding problems first: they are bad records, found before any length drop
        if row["problem_kind"]:
            field = (sources[row["source"]].columns or {}).get("prompt", "prompt")
            if strict:
                raise PreferenceDataError(row["location"], field, row["problem"], kind=row["problem_kind"])
            tally.drop(row["problem_kind"], row["location"], field, row["problem"])
    for row in rows:
        if not row["problem_kind"]:
            tally.drop(NO_COMPLETION, row["location"], None, f"the prompt leaves no completion token within {limit}")
    return np.flatnonzero(~dropped)


def first_bad_record(tally: dict[str, Any]) -> PreferenceDataError | None:
    """The error a strict run raises, rebuilt from a stored tally (a cache made without ``strict``): the first
    record, in reading order, that is bad or has an empty completion; else the first that fails to encode
    (strict meets those only after reading every row)."""
    bad = [e for e in tally["first_dropped"] if e["kind"] in BAD_RECORD_KINDS]
    read = [e for e in bad + tally.get("first_empty", []) if "index" in e]
    entry = min(read, key=lambda e: e["index"]) if read else next(iter(bad), None)
    if entry is None:
        return None
    return PreferenceDataError(entry["location"], entry["field"], entry["message"], kind=entry["kind"])
