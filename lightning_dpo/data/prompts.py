"""Prompts alone: records -> prompts -> token ids, exactly as the preference pipeline builds a pair's prompt.

On-policy training samples completions of prompts and DPO then scores those completions under the
tokens of the prompt, so both must see the same tokens. A prompt therefore goes through the pipeline's
own code: :func:`~lightning_dpo.data.formats.to_example` (validation, the system prompt, an implicit
prompt's split) and :func:`~lightning_dpo.data.tokenize.tokenize_examples` (the BOS once, the chat template
with ``add_generation_prompt``), applied to a record whose two completions are placeholders that never reach a
model. ``max_prompt_length`` is then a hard cap: a longer prompt keeps its last tokens and its BOS, as
training's ``keep_end`` cuts a prompt (training cuts only as far as a pair needs; a sampled prompt must leave
room for ``max_new_tokens`` whatever it is paired with).

A prompt record is any row the preference pipeline reads:

- a record with a ``prompt``: a string, or a list of ``{"role", "content"}`` messages; other fields
  (``chosen``, ``rejected``, anything else) are not read;
- a full preference record without one: its prompt is found as ``to_example`` finds it (an HH-RLHF
  transcript's shared prefix, a conversation's earlier turns).

A bad record is skipped and counted by reason (``BAD_RECORD_KINDS``, plus ``duplicate`` for a prompt seen
before), or stops the run with ``strict``; truncated prompts are counted.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from transformers import PreTrainedTokenizerBase

from lightning_dpo.data.formats import ChatExample, Example, Message, PreferenceExample, to_example
from lightning_dpo.data.sources import InvalidJSON, PreferenceDataError, Row, as_sources, read_splits
from lightning_dpo.data.splits import carve_indices
from lightning_dpo.data.tokenize import tokenize_examples
from lightning_dpo.data.truncation import EncodingProblem, TokenSettings, keep_prompt_end

_TEXT_PLACEHOLDERS = (" a", " b")
_CHAT_PLACEHOLDERS = ([{"role": "assistant", "content": "a"}], [{"role": "assistant", "content": "b"}])
FIRST_PER_KIND = 5


class Prompt(NamedTuple):
    """One tokenised prompt."""

    index: int
    """Its position in the prompt set: a stable id (resumption, sampling seeds, output records)."""
    location: str
    """Where the record came from (``file.jsonl:12``), for messages."""
    prompt: str | list[Message]
    """The prompt as the data gives it (with the system prompt): what an output record stores."""
    text: str
    """The prompt as text, for rewards and judges: the string itself, or a conversation's decoded tokens."""
    ids: list[int]
    """Token ids as the preference pipeline builds a prompt (BOS, template, truncation)."""
    truncated: bool
    """Whether ``max_prompt_length`` cut it (it keeps its last tokens)."""


@dataclass
class PromptSet:
    """The prompts of one split and what was read, kept and dropped."""

    prompts: list[Prompt]
    tally: dict[str, Any] = field(default_factory=dict)
    """``read``, ``kept``, ``truncated``, ``dropped`` (by reason) and the first dropped records."""

    def __len__(self) -> int:
        return len(self.prompts)

    def fingerprint(self) -> str:
        """sha256 of every prompt's token ids, in order."""
        digest = hashlib.sha256()
        for p in self.prompts:
            digest.update(json.dumps(p.ids).encode() + b"\n")
        return digest.hexdigest()


def prompt_example(
    row: Any, location: str, columns: Mapping[str, str] | None = None, system_prompt: str | None = None
) -> Example:
    """A prompt record as an example with placeholder completions; raises :class:`PreferenceDataError`."""
    if isinstance(row, InvalidJSON):
        raise PreferenceDataError(location, None, row.message, kind="invalid_json")
    if not isinstance(row, Mapping):
        raise PreferenceDataError(
            location, None, f"expected an object with a prompt, got {type(row).__name__}", kind="not_a_record"
        )
    name = (columns or {}).get("prompt", "prompt")
    value = row.get(name)
    if value is None:
        if all(row.get((columns or {}).get(r, r)) is not None for r in ("chosen", "rejected")):
            example = to_example(row, location, columns, system_prompt)  # the prompt of a full record
            return _with_placeholders(example)
        raise PreferenceDataError(
            location,
            name,
            "the field is missing (and there are no chosen/rejected to find it in)",
            kind="missing_field",
        )
    if isinstance(value, list):
        record = {"prompt": value, "chosen": _CHAT_PLACEHOLDERS[0], "rejected": _CHAT_PLACEHOLDERS[1]}
    else:
        record = {"prompt": value, "chosen": _TEXT_PLACEHOLDERS[0], "rejected": _TEXT_PLACEHOLDERS[1]}
    try:
        return to_example(record, location, None, system_prompt)
    except PreferenceDataError as e:  # name the user's column, not ours
        raise PreferenceDataError(location, name if e.field == "prompt" else e.field, e.reason, kind=e.kind) from None


def _with_placeholders(example: Example) -> Example:
    if isinstance(example, ChatExample):
        return ChatExample(example.prompt, *_CHAT_PLACEHOLDERS)
    return PreferenceExample(example.prompt, *_TEXT_PLACEHOLDERS)


def prompt_token_settings(chat_template: str | None = None) -> TokenSettings:
    """Token settings that never cut: the prompt is tokenised whole, then :func:`build_prompts` keeps its end."""
    return TokenSettings(max_length=10_000_000, chat_template=chat_template)


def build_prompts(
    rows: Iterable[Row],
    tokenizer: PreTrainedTokenizerBase,
    *,
    max_prompt_length: int | None = 256,
    chat_template: str | None = None,
    system_prompt: str | None = None,
    columns: Mapping[str, str] | None = None,
    strict: bool = False,
    limit: int | None = None,
    batch_size: int = 1000,
) -> PromptSet:
    """Read, validate, deduplicate and tokenise prompt records (the first ``limit`` usable ones)."""
    settings = prompt_token_settings(chat_template)
    tally: dict[str, Any] = {"read": 0, "dropped": Counter(), "first_dropped": []}
    seen: dict[str, str] = {}
    pending: list[tuple[str, Example]] = []
    prompts: list[Prompt] = []

    def drop(e: PreferenceDataError) -> None:
        if strict:
            raise e
        tally["dropped"][e.kind] += 1
        if tally["dropped"][e.kind] <= FIRST_PER_KIND:
            tally["first_dropped"].append(
                {"kind": e.kind, "location": e.location, "field": e.field, "message": e.reason}
            )

    def flush() -> None:
        encoded = tokenize_examples([e for _, e in pending], tokenizer, settings)
        for (location, example), tokens in zip(pending, encoded):
            if isinstance(tokens, EncodingProblem):
                drop(PreferenceDataError(location, "prompt", tokens.message, kind=tokens.kind))
                continue
            whole = list(tokens["prompt_input_ids"])
            ids = (
                whole
                if max_prompt_length is None
                else keep_prompt_end(whole, max_prompt_length, tokenizer.bos_token_id)
            )
            text = (
                example.prompt if isinstance(example.prompt, str) else tokenizer.decode(ids, skip_special_tokens=True)
            )
            truncated = len(ids) < len(whole)
            prompts.append(Prompt(len(prompts), location, example.prompt, text, ids, truncated))
        pending.clear()

    for location, row in rows:
        if limit is not None and len(prompts) + len(pending) >= limit:
            break
        tally["read"] += 1
        try:
            example = prompt_example(row, location, columns, system_prompt)
            key = json.dumps(example.prompt, sort_keys=True)
            if key in seen:
                raise PreferenceDataError(location, None, f"the same prompt as {seen[key]}", kind="duplicate")
        except PreferenceDataError as e:
            drop(e)
            continue
        seen[key] = location
        pending.append((location, example))
        if len(pending) >= batch_size:
            flush()
    if pending:
        flush()
    tally = {
        "read": tally["read"],
        "kept": len(prompts),
        "truncated": sum(p.truncated for p in prompts),
        "dropped": dict(sorted(tally["dropped"].items())),
        "first_dropped": tally["first_dropped"],
    }
    return PromptSet(prompts, tally)


def read_prompt_rows(dataset: Any, split: str, dataset_config: str | None = None) -> list[tuple[str, Iterable[Row]]]:
    """``(name, rows)`` of ``split`` in each source of ``dataset`` (anything ``data.dataset`` takes; a mixture's
    weights do not apply to prompts and must be 1)."""
    out = []
    for source in as_sources(dataset):
        if source.weight != 1:
            raise ValueError(
                f"prompt source {source.path!r}: mixture weights do not apply to prompts (got {source.weight})"
            )
        splits = read_splits(source.path, source.config or dataset_config)
        name = source.split or split
        if name not in splits:
            raise ValueError(f"dataset {source.path!r} has no split {name!r}; it has {sorted(splits)}")
        out.append((f"{source.path}[{name}]", splits[name]))
    return out


def dropped_summary(tally: Mapping[str, Any]) -> str | None:
    """A warning line for skipped prompt records (None when none was skipped)."""
    dropped = tally.get("dropped") or {}
    if not dropped:
        return None
    reasons = ", ".join(f"{n} {kind}" for kind, n in dropped.items())
    first = tally.get("first_dropped") or []
    example = f"; first: {first[0]['location']}: {first[0]['message']}" if first else ""
    return f"skipped {sum(dropped.values())} of {tally.get('read', 0)} prompt records ({reasons}){example}"


def carve(prompts: Sequence[Prompt], size: float, seed: int) -> tuple[list[Prompt], list[Prompt]]:
    """Split off ``size`` prompts (a fraction < 1, or a count) for validation, seeded; indices are kept."""
    train, val = carve_indices(len(prompts), size, seed, unit="prompts")
    return [prompts[i] for i in train], [prompts[i] for i in val]
