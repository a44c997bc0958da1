"""Raw rows -> examples: ``PreferenceExample`` (strings) or ``ChatExample`` (message lists).

Row formats:

- **standard**: ``prompt``, ``chosen`` and ``rejected`` strings; ``chosen``/``rejected`` are completions.
- **implicit prompt** (the HH-RLHF form): only ``chosen`` and ``rejected``, each a full transcript
  ``"\\n\\nHuman: … \\n\\nAssistant: …"``. The prompt is their shared prefix up to and including the last
  ``"\\n\\nAssistant:"`` inside it; without such a marker, up to the last whitespace inside it. So the
  prompt never ends inside a word, and when two responses begin alike their common start stays in both
  completions (TRL's longest-common-prefix rule would move it into the prompt).
- **conversational** (UltraFeedback-binarized, Tulu): ``chosen``/``rejected`` are lists of messages
  ``{"role": ..., "content": ...}``. The prompt is a message list in ``prompt``; or, when the rows hold full
  conversations, the earlier turns they share; or, when they share none, a ``prompt`` string as one user
  message. The completion must begin with an assistant message. The tokenizer's chat template renders them
  (``templates.py``).

Options: ``columns`` renames roles (``{"prompt": "question", "chosen": "good", "rejected": "bad"}``: the
data's column names by role), and ``system_prompt`` goes in front of every prompt: as a system message
(unless the conversation already starts with one), or verbatim in front of a text prompt.

A completion that says nothing (empty or blank) is kept: the preferred answer can be to say nothing
(HH-RLHF has such pairs), and its tokens are then the EOS alone. A pair empty on both sides, or identical on
both sides, expresses no preference. A record that cannot be trained on raises :class:`PreferenceDataError`
naming the record, the data's field, and a ``kind`` from :data:`~lightning_dpo.data.sources.BAD_RECORD_KINDS`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any, NamedTuple

from lightning_dpo.data.sources import InvalidJSON, PreferenceDataError

ASSISTANT_MARKER = "\n\nAssistant:"
BOTH_EMPTY = "both completions are empty: the pair expresses no preference"
NO_MESSAGE = "the completion is empty: no message follows the prompt (an empty reply would be a message)"
ROLES = ("prompt", "chosen", "rejected")

Message = dict[str, Any]
"""``{"role": str, "content": str, ...}``; other keys are passed on to the chat template."""


class PreferenceExample(NamedTuple):
    prompt: str
    chosen: str
    rejected: str


class ChatExample(NamedTuple):
    prompt: list[Message]
    chosen: list[Message]
    rejected: list[Message]


Example = PreferenceExample | ChatExample

EXAMPLE_KINDS: dict[str, type] = {"text": PreferenceExample, "chat": ChatExample}
"""Every kind of example by name (the name travels with a record through ``datasets.map``)."""


def example_kind(example: Example) -> str:
    return next(name for name, cls in EXAMPLE_KINDS.items() if isinstance(example, cls))


def example_to_columns(example: Example) -> dict[str, str]:
    """``{"kind": ..., "prompt": ..., "chosen": ..., "rejected": ...}``, each role as JSON text (Arrow holds
    strings and message lists alike that way)."""
    return {"kind": example_kind(example), **{role: json.dumps(value) for role, value in zip(ROLES, example)}}


def example_from_columns(columns: Mapping[str, str]) -> Example:
    """The inverse of :func:`example_to_columns`."""
    return EXAMPLE_KINDS[columns["kind"]](*(json.loads(columns[role]) for role in ROLES))


def split_implicit_prompt(chosen: str, rejected: str) -> PreferenceExample:
    """Split two full transcripts into (shared prompt, chosen completion, rejected completion)."""
    shared = os.path.commonprefix([chosen, rejected])
    marker = shared.rfind(ASSISTANT_MARKER)
    if marker >= 0:
        cut = marker + len(ASSISTANT_MARKER)
    else:
        # Cut before the last whitespace run of the shared prefix, so completions keep their leading space.
        # A shared prefix that ends exactly at a word's end may still continue differently ("is" / "isn't"),
        # so the word before the cut is never assumed complete.
        cut = max(shared.rfind(c) for c in (" ", "\n", "\t"))
        cut = max(cut, 0)
        while cut > 0 and shared[cut - 1].isspace():
            cut -= 1
    return PreferenceExample(chosen[:cut], chosen[cut:], rejected[cut:])


def split_implicit_conversation(
    chosen: list[Message], rejected: list[Message]
) -> tuple[list[Message], list[Message], list[Message]]:
    """Split two full conversations into (shared earlier turns, chosen rest, rejected rest)."""
    n = 0
    while n < min(len(chosen), len(rejected)) and chosen[n] == rejected[n]:
        n += 1
    return chosen[:n], chosen[n:], rejected[n:]


def check_columns(columns: Mapping[str, str] | None) -> dict[str, str]:
    """Validate a column mapping (role -> the data's column name) and return it as a dict."""
    columns = dict(columns or {})
    unknown = sorted(set(columns) - set(ROLES))
    if unknown:
        raise ValueError(f"columns maps roles {list(ROLES)} to your column names; unknown roles {unknown}")
    return columns


def to_example(
    row: Any, location: str, columns: Mapping[str, str] | None = None, system_prompt: str | None = None
) -> Example:
    """Validate one raw row and return its example; raise :class:`PreferenceDataError` naming the record."""
    if isinstance(row, InvalidJSON):
        raise PreferenceDataError(location, None, row.message, kind=row.kind)
    if not isinstance(row, Mapping):
        raise PreferenceDataError(
            location,
            None,
            f"expected an object with prompt/chosen/rejected, got {type(row).__name__}",
            kind="not_a_record",
        )
    names = {role: (columns or {}).get(role, role) for role in ROLES}
    for role in ("chosen", "rejected"):
        if row.get(names[role]) is None:
            raise PreferenceDataError(location, names[role], "the field is missing", kind="missing_field")
    if isinstance(row[names["chosen"]], list) or isinstance(row[names["rejected"]], list):
        return _chat_example(row, location, names, system_prompt)
    return _text_example(row, location, names, system_prompt)


def empty_sides(example: Example) -> list[str]:
    """The roles (``chosen``, ``rejected``) whose completion says nothing: an empty string, or messages whose
    content is blank. Such a completion is kept, as its EOS alone (text) or the template's empty reply."""
    sides = []
    for role in ("chosen", "rejected"):
        value = getattr(example, role)
        if (not value.strip()) if isinstance(value, str) else not any(m["content"].strip() for m in value):
            sides.append(role)
    return sides


def example_key(example: Example) -> Any:
    """A hashable key equal for exact duplicates."""
    return example if isinstance(example, PreferenceExample) else json.dumps(example, sort_keys=True)


def _text_example(row: Mapping, location: str, names: dict[str, str], system_prompt: str | None) -> PreferenceExample:
    for role in ("chosen", "rejected"):
        _require_string(row, names[role], location)
    prompt = row.get(names["prompt"])
    if prompt is None:
        example = split_implicit_prompt(row[names["chosen"]], row[names["rejected"]])
    else:
        _require_string(row, names["prompt"], location)
        example = PreferenceExample(prompt, row[names["chosen"]], row[names["rejected"]])
    if not example.prompt.strip():
        raise PreferenceDataError(location, names["prompt"], "the prompt is empty", kind="empty_prompt")
    # A blank answer is the empty answer: its tokens are the EOS alone.
    example = example._replace(**{role: "" for role in ("chosen", "rejected") if not getattr(example, role).strip()})
    if not example.chosen and not example.rejected:
        raise PreferenceDataError(location, names["chosen"], BOTH_EMPTY, kind="empty_completion")
    if example.chosen == example.rejected:
        raise PreferenceDataError(
            location, names["rejected"], "identical to chosen: the pair expresses no preference", kind="identical"
        )
    if system_prompt:
        example = example._replace(prompt=system_prompt + example.prompt)
    return example


def _chat_example(row: Mapping, location: str, names: dict[str, str], system_prompt: str | None) -> ChatExample:
    chosen = _messages(row[names["chosen"]], location, names["chosen"])
    rejected = _messages(row[names["rejected"]], location, names["rejected"])
    for role, messages in (("chosen", chosen), ("rejected", rejected)):
        if not messages:
            raise PreferenceDataError(location, names[role], NO_MESSAGE, kind="empty_completion")
    prompt_value = row.get(names["prompt"])
    if isinstance(prompt_value, list):
        prompt = _messages(prompt_value, location, names["prompt"])
        n = len(prompt)
        if chosen[:n] == prompt and rejected[:n] == prompt:  # full conversations that repeat the prompt
            chosen, rejected = chosen[n:], rejected[n:]
    elif prompt_value is None or isinstance(prompt_value, str):
        prompt, chosen, rejected = split_implicit_conversation(chosen, rejected)
        if not prompt and prompt_value is not None and prompt_value.strip():
            prompt = [{"role": "user", "content": prompt_value}]
    else:
        raise PreferenceDataError(
            location,
            names["prompt"],
            f"expected a string or a list of messages, got {type(prompt_value).__name__}",
            kind="not_a_string",
        )
    if not prompt:
        raise PreferenceDataError(
            location,
            names["prompt"],
            "the prompt is empty: the conversations share no earlier turn and no prompt is given",
            kind="empty_prompt",
        )
    for role, messages in (("chosen", chosen), ("rejected", rejected)):
        if not messages:
            raise PreferenceDataError(location, names[role], NO_MESSAGE, kind="empty_completion")
    if not any(m["content"].strip() for m in chosen) and not any(m["content"].strip() for m in rejected):
        raise PreferenceDataError(location, names["chosen"], BOTH_EMPTY, kind="empty_completion")
    for role, messages in (("chosen", chosen), ("rejected", rejected)):
        if messages[0]["role"] != "assistant":
            raise PreferenceDataError(
                location,
                names[role],
                f"the completion must begin with an assistant message, not {messages[0]['role']!r}",
                kind="not_a_string",
            )
    if chosen == rejected:
        raise PreferenceDataError(
            location, names["rejected"], "identical to chosen: the pair expresses no preference", kind="identical"
        )
    if system_prompt and prompt[0]["role"] != "system":
        prompt = [{"role": "system", "content": system_prompt}, *prompt]
    return ChatExample(prompt, chosen, rejected)


def _messages(value: Any, location: str, field: str) -> list[Message]:
    """Validate a list of ``{"role": str, "content": str}`` messages; keys whose value is None are dropped
    (Arrow fills absent struct fields with None)."""
    if not isinstance(value, list):
        raise PreferenceDataError(
            location,
            field,
            f"expected a list of messages like the other side, got {type(value).__name__}",
            kind="not_a_string",
        )
    messages = []
    for i, message in enumerate(value):
        if not isinstance(message, Mapping):
            raise PreferenceDataError(
                location,
                field,
                f"message {i} is a {type(message).__name__}, not an object with role and content",
                kind="not_a_string",
            )
        for key in ("role", "content"):
            if not isinstance(message.get(key), str):
                raise PreferenceDataError(
                    location,
                    field,
                    f"message {i} has a {key} of type {type(message.get(key)).__name__}, not a string",
                    kind="not_a_string",
                )
        messages.append({k: v for k, v in message.items() if v is not None})
    return messages


def _require_string(row: Mapping, field: str, location: str) -> None:
    if row.get(field) is None:
        raise PreferenceDataError(location, field, "the field is missing", kind="missing_field")
    if not isinstance(row[field], str):
        raise PreferenceDataError(
            location, field, f"expected a string, got {type(row[field]).__name__}", kind="not_a_string"
        )
