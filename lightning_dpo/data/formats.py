"""Raw rows -> ``PreferenceExample(prompt, chosen, rejected)`` strings.

Two row formats:

- **standard**: ``prompt``, ``chosen`` and ``rejected`` strings; ``chosen``/``rejected`` are completions.
- **implicit prompt** (the HH-RLHF form): only ``chosen`` and ``rejected``, each a full transcript
  ``"\\n\\nHuman: … \\n\\nAssistant: …"``. The prompt is their shared prefix up to and including the last
  ``"\\n\\nAssistant:"`` inside it; without such a marker, up to the last whitespace inside it. So the
  prompt never ends inside a word, and when two responses begin alike their common start stays in both
  completions (TRL's longest-common-prefix rule would move it into the prompt).
"""

from __future__ import annotations

import os
from typing import Any, NamedTuple

from lightning_dpo.data.sources import PreferenceDataError

ASSISTANT_MARKER = "\n\nAssistant:"


class PreferenceExample(NamedTuple):
    prompt: str
    chosen: str
    rejected: str


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


def to_example(row: Any, location: str) -> PreferenceExample:
    """Validate one raw row and return its example; raise :class:`PreferenceDataError` naming the record."""
    if not isinstance(row, dict):
        raise PreferenceDataError(location, None, f"expected an object with prompt/chosen/rejected, got {type(row).__name__}")
    for field in ("chosen", "rejected"):
        _require_string(row, field, location)
    if "prompt" in row and row["prompt"] is not None:
        _require_string(row, "prompt", location)
        example = PreferenceExample(row["prompt"], row["chosen"], row["rejected"])
    else:
        example = split_implicit_prompt(row["chosen"], row["rejected"])
    if not example.prompt.strip():
        raise PreferenceDataError(location, "prompt", "the prompt is empty")
    for field in ("chosen", "rejected"):
        if not getattr(example, field).strip():
            raise PreferenceDataError(location, field, "the completion is empty")
    if example.chosen == example.rejected:
        raise PreferenceDataError(location, "rejected", "identical to chosen: the pair expresses no preference")
    return example


def _require_string(row: dict, field: str, location: str) -> None:
    if field not in row or row[field] is None:
        raise PreferenceDataError(location, field, "the field is missing")
    if not isinstance(row[field], str):
        raise PreferenceDataError(location, field, f"expected a string, got {type(row[field]).__name__}")
