"""The tokenization linter: checks over a whole tokenised split, for the mistakes that cost runs.

Each check is a pure function over the split's token columns (:class:`Columns`) that marks the records it
finds; :func:`lint` runs them all and gives, per check, the count and the first locations, and
:data:`CHECKS` says what each means and what to do. ``lightning-dpo data`` prints them (``--strict`` exits
non-zero on any), and the data module keeps them in its report (``data/train/lint/<check>/count``).

- ``double_bos``: a pair's row (prompt + completion) holds BOS more than once. The tokenizer step already
  collapses a BOS the text repeats at its start; what is left is a BOS string inside the text, or turns
  that each start with one. With BOS = EOS (GPT-2 style) only a doubled leading BOS is counted.
- ``missing_eos``: a completion that does not end with EOS although truncation did not cut it: the model
  would never learn to stop. (A completion cut at its end loses its EOS on purpose.)
- ``eos_inside``: EOS before a completion's end: an EOS string in the text, or a completion of several
  assistant turns that the template closes with EOS each.
- ``boundary_merge``: the prompt ends inside a token of the whole text: tokenised alone, its last tokens
  differ from the whole text's (a trailing space, ``"Assistant: "``, merges into the answer's first word).
  Training keeps the whole text's tokens (the merged ones belong to the completions), but generation from
  the prompt alone starts from tokens the model never saw there. The encoders count these tokens while
  tokenising (``boundary_tokens``), so the check costs no second tokenisation.
- ``template_drift``: the chat template renders the prompt alone differently from the same turns before a
  reply (``templates.py``); the record is kept, split where the tokens diverge.
- ``contradictory``: the same prompt with A preferred to B in one record and B to A in another.
- ``identical_after_truncation``: chosen and rejected are the same tokens once truncated: their DPO margin
  is 0 by construction, so the pair teaches nothing.

The checks read the tokens as trained on (after truncation), so two prompts that truncation leaves alike
are the same prompt.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, NamedTuple

import datasets
import numpy as np

from lightning_dpo.data.arrow import column, column_table

SHOWN = 5  # locations kept per check
CHUNK = 50_000  # records read at a time (bounds the memory of a large split)


class Check(NamedTuple):
    title: str
    what_to_do: str


CHECKS: dict[str, Check] = {
    "double_bos": Check(
        "BOS more than once in a row",
        "the text already holds the BOS string, or every turn starts with one: remove it from the data (or from "
        "data.chat_template); the tokenizer step adds BOS once",
    ),
    "missing_eos": Check(
        "completion without a final EOS (not cut by truncation)",
        "the encoder did not end the completion with EOS, so the model does not learn to stop: check the "
        "tokenizer's eos_token and the encoder of this kind of example",
    ),
    "eos_inside": Check(
        "EOS inside a completion",
        "the completion holds the EOS string, or several turns that the template closes with EOS: strip the "
        "EOS string from the text; for multi-turn completions this is expected",
    ),
    "boundary_merge": Check(
        "prompt/completion boundary inside a token",
        "the prompt ends where the whole text has no token boundary (often a trailing space: 'Assistant: '); "
        "training is exact, but generation from the prompt alone starts from a token the model did not see "
        "there: end prompts before the space and start completions with it",
    ),
    "template_drift": Check(
        "template renders the prompt differently",
        "the chat template renders the prompt alone (add_generation_prompt) unlike the same turns before a "
        "reply; the pair is split where the tokens diverge, but generation sees another prompt: set "
        "data.chat_template to a template that renders both alike (data.strict refuses these)",
    ),
    "contradictory": Check(
        "same prompt, contradictory preferences",
        "one record prefers A to B and another B to A for the same prompt: the pairs pull the policy both "
        "ways; check the labels and keep one",
    ),
    "identical_after_truncation": Check(
        "chosen equal to rejected after truncation",
        "the completions differ only past data.max_length, so the pair teaches nothing (margin 0): raise "
        "data.max_length, or use truncation_mode=keep_end so that prompts give way first",
    ),
}
"""Every check, in the order reported: what it finds, and what to do about it."""


class Ragged(NamedTuple):
    """A list-of-ids column as flat values and row offsets: row ``i`` is ``values[offsets[i]:offsets[i+1]]``."""

    values: np.ndarray  # (total,)
    offsets: np.ndarray  # (N + 1,)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)  # (N,)

    def row(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i] : self.offsets[i + 1]]

    def count(self, token: int) -> np.ndarray:
        """(N,) occurrences of ``token`` in each row."""
        rows = np.repeat(np.arange(len(self.offsets) - 1), self.lengths)  # (total,) the row of each value
        return np.bincount(rows[self.values == token], minlength=len(self.offsets) - 1)

    def last(self, fill: int = -1) -> np.ndarray:
        """(N,) each row's last value (``fill`` for an empty row)."""
        out = np.full(len(self.offsets) - 1, fill, dtype=np.int64)
        filled = self.lengths > 0
        out[filled] = self.values[self.offsets[1:][filled] - 1]
        return out

    def first(self, k: int, fill: int = -1) -> np.ndarray:
        """(N,) each row's ``k``-th value (``fill`` where the row is shorter)."""
        out = np.full(len(self.offsets) - 1, fill, dtype=np.int64)
        long = self.lengths > k
        out[long] = self.values[self.offsets[:-1][long] + k]
        return out


def ragged(rows: Sequence[Sequence[int]]) -> Ragged:
    """A :class:`Ragged` column from Python lists."""
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in rows])]).astype(np.int64)
    values = np.fromiter((v for r in rows for v in r), dtype=np.int64, count=int(offsets[-1]))
    return Ragged(values, offsets)


class Columns(NamedTuple):
    """The token columns of a split (or a chunk of one) that the checks read."""

    location: list[str]
    prompt: Ragged  # ids after truncation
    chosen: Ragged
    rejected: Ragged
    chosen_length: np.ndarray  # (N,) completion tokens before truncation
    rejected_length: np.ndarray
    boundary_tokens: np.ndarray  # (N,) prompt tokens merged across the boundary
    template_drift: np.ndarray  # (N,) bool


# -- the checks: each marks the records it finds ------------------------------------------------------


def double_bos(c: Columns, bos: int | None, eos: int | None) -> np.ndarray:
    """(N,) a row (prompt + a completion) holds BOS more than once (BOS = EOS: the prompt starts with two)."""
    if bos is None:
        return np.zeros(len(c.location), dtype=bool)
    if bos == eos:
        return (c.prompt.first(0) == bos) & (c.prompt.first(1) == bos)
    prompt = c.prompt.count(bos)
    return (prompt + np.maximum(c.chosen.count(bos), c.rejected.count(bos))) > 1


def missing_eos(c: Columns, eos: int | None) -> np.ndarray:
    """(N,) a completion that does not end with EOS and was not cut at its end."""
    if eos is None:
        return np.zeros(len(c.location), dtype=bool)
    whole_chosen = c.chosen.lengths == c.chosen_length
    whole_rejected = c.rejected.lengths == c.rejected_length
    return (whole_chosen & (c.chosen.last() != eos)) | (whole_rejected & (c.rejected.last() != eos))


def eos_inside(c: Columns, eos: int | None) -> np.ndarray:
    """(N,) a completion with an EOS before its last token."""
    if eos is None:
        return np.zeros(len(c.location), dtype=bool)
    inner_chosen = c.chosen.count(eos) - (c.chosen.last() == eos)
    inner_rejected = c.rejected.count(eos) - (c.rejected.last() == eos)
    return (inner_chosen > 0) | (inner_rejected > 0)


def boundary_merge(c: Columns) -> np.ndarray:
    """(N,) the prompt tokenised alone ends with tokens that the whole text merged across the boundary."""
    return c.boundary_tokens > 0


def template_drift(c: Columns) -> np.ndarray:
    """(N,) the chat template renders the prompt alone differently."""
    return c.template_drift.astype(bool)


def identical_after_truncation(c: Columns) -> np.ndarray:
    """(N,) chosen and rejected are the same ids."""
    same_length = np.flatnonzero(c.chosen.lengths == c.rejected.lengths)
    out = np.zeros(len(c.location), dtype=bool)
    for i in same_length.tolist():
        out[i] = np.array_equal(c.chosen.row(i), c.rejected.row(i))
    return out


def pair_keys(c: Columns) -> list[tuple[bytes, bytes, bytes]]:
    """A short digest of each record's (prompt, chosen, rejected) ids, for :func:`contradictions`."""

    def digest(r: Ragged, i: int) -> bytes:
        return hashlib.blake2b(r.row(i).astype(np.int64).tobytes(), digest_size=12).digest()

    return [(digest(c.prompt, i), digest(c.chosen, i), digest(c.rejected, i)) for i in range(len(c.location))]


def contradictions(keys: Sequence[tuple[bytes, bytes, bytes]]) -> list[tuple[int, int]]:
    """``(i, j)`` for each record ``i`` whose prompt and completions appear, preferences reversed, in an earlier
    record ``j`` (a pair equal on both sides contradicts nothing)."""
    first: dict[tuple[bytes, bytes, bytes], int] = {}
    found = []
    for i, (prompt, chosen, rejected) in enumerate(keys):
        if chosen == rejected:
            continue
        j = first.get((prompt, rejected, chosen))
        if j is not None:
            found.append((i, j))
        first.setdefault((prompt, chosen, rejected), i)
    return found


ROW_CHECKS = {
    "double_bos": double_bos,
    "missing_eos": lambda c, bos, eos: missing_eos(c, eos),
    "eos_inside": lambda c, bos, eos: eos_inside(c, eos),
    "boundary_merge": lambda c, bos, eos: boundary_merge(c),
    "template_drift": lambda c, bos, eos: template_drift(c),
    "identical_after_truncation": lambda c, bos, eos: identical_after_truncation(c),
}
"""The checks that mark records one at a time, by name (``contradictory`` compares records)."""


# -- running them -------------------------------------------------------------------------------------


def lint(c: Columns, bos: int | None, eos: int | None) -> dict[str, dict[str, Any]]:
    """Every check over ``c``: ``{check: {"count": n, "first": [location, ...]}}`` in :data:`CHECKS` order."""
    found = {name: np.flatnonzero(check(c, bos, eos)) for name, check in ROW_CHECKS.items()}
    pairs = contradictions(pair_keys(c))
    return _findings(found, pairs, c.location)


def lint_split(data: datasets.Dataset, bos: int | None, eos: int | None) -> dict[str, dict[str, Any]]:
    """:func:`lint` over a tokenised split (``pipeline.TOKEN_FEATURES``), read ``CHUNK`` records at a time."""
    found: dict[str, list[np.ndarray]] = {name: [] for name in ROW_CHECKS}
    keys: list[tuple[bytes, bytes, bytes]] = []
    for start in range(0, len(data), CHUNK):
        chunk = columns_of(data.select(range(start, min(start + CHUNK, len(data)))))
        for name, check in ROW_CHECKS.items():
            found[name].append(start + np.flatnonzero(check(chunk, bos, eos)))
        keys += pair_keys(chunk)
    locations = _Locations(data)
    rows = {name: np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64) for name, parts in found.items()}
    return _findings(rows, contradictions(keys), locations)


def columns_of(data: datasets.Dataset) -> Columns:
    """The :class:`Columns` of a tokenised split, read from its Arrow table."""
    return Columns(
        location=_Locations(data),
        prompt=ragged_column(data, "prompt_input_ids"),
        chosen=ragged_column(data, "chosen_input_ids"),
        rejected=ragged_column(data, "rejected_input_ids"),
        chosen_length=column(data, "chosen_length"),
        rejected_length=column(data, "rejected_length"),
        boundary_tokens=column(data, "boundary_tokens"),
        template_drift=column(data, "template_drift"),
    )


def ragged_column(data: datasets.Dataset, name: str) -> Ragged:
    ids = column_table(data, name).column(name).combine_chunks()
    offsets = np.asarray(ids.offsets, dtype=np.int64)
    return Ragged(np.asarray(ids.flatten()), offsets - offsets[0])


class _Locations:
    """Record locations, read only for the records named (a split's locations are many strings)."""

    def __init__(self, data: datasets.Dataset) -> None:
        self.data = data

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> str:
        return self.data.select_columns(["location"])[int(i)]["location"]


def _findings(rows: dict[str, np.ndarray], pairs: list[tuple[int, int]], location: Any) -> dict[str, dict[str, Any]]:
    out = {}
    for name in CHECKS:
        if name == "contradictory":
            first = [f"{location[i]} (reverses {location[j]})" for i, j in pairs[:SHOWN]]
            out[name] = {"count": len(pairs), "first": first}
        else:
            out[name] = {"count": len(rows[name]), "first": [location[i] for i in rows[name][:SHOWN].tolist()]}
    return out


def failing(report: dict[str, dict[str, Any]]) -> list[str]:
    """``"train: 3 eos_inside"``, ... for every check that found something, over a data report's splits."""
    return [
        f"{split}: {finding['count']} {name}"
        for split, r in report.items()
        for name, finding in r.get("lint", {}).items()
        if finding["count"]
    ]
