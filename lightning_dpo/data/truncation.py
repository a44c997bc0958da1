"""DPO's truncation rules, applied to one encoded pair (prompt ids, chosen ids, rejected ids).

``truncation_mode``:

- ``keep_end`` (the default): ``max_prompt_length`` keeps the prompt's *last* tokens (the end of a dialogue
  matters most), with a leading BOS kept in front; then ``max_length`` bounds prompt + completion, and a
  completion that overflows is cut at its end.
- ``keep_start`` (TRL's default): prompt + completion keeps its first ``max_length`` tokens; the prompt is
  not cut on its own (``max_prompt_length`` is not used), so a prompt of ``max_length`` tokens or more
  leaves no completion token.

A completion cut at its end loses its EOS: the model must not learn that the cut point is where the answer
stops. A pair left with no completion token on either side cannot be trained on; it is marked ``dropped``
and the pipeline counts and reports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, NamedTuple, TypedDict

TruncationMode = Literal["keep_end", "keep_start"]
TRUNCATION_MODES: tuple[str, ...] = ("keep_end", "keep_start")


class Encoded(NamedTuple):
    """Token ids before truncation: the prompt (with its BOS) and each completion (ending with EOS)."""

    prompt: list[int]
    chosen: list[int]
    rejected: list[int]


class TokenizedPair(TypedDict):
    prompt_input_ids: list[int]
    chosen_input_ids: list[int]  # completion only
    rejected_input_ids: list[int]  # completion only
    prompt_length: int  # tokens before truncation
    chosen_length: int
    rejected_length: int
    length: int  # the pair's longest row after truncation: prompt + the longer completion
    truncated: bool  # the prompt or a completion lost tokens
    dropped: bool  # no completion token left on a side


@dataclass(frozen=True)
class TokenSettings:
    """Every setting, beside the tokenizer and the data, that changes the tokens."""

    max_length: int
    max_prompt_length: int | None = None
    truncation_mode: TruncationMode = "keep_end"
    chat_template: str | None = None  # the template's text; None: the tokenizer's own


def truncate(encoded: Encoded, settings: TokenSettings, bos_token_id: int | None = None) -> TokenizedPair:
    """Apply ``settings`` (the module docstring's rules) to one encoded pair."""
    max_length, max_prompt_length, truncation_mode = (
        settings.max_length,
        settings.max_prompt_length,
        settings.truncation_mode,
    )
    if truncation_mode not in TRUNCATION_MODES:
        raise ValueError(f"truncation_mode must be one of {TRUNCATION_MODES}, got {truncation_mode!r}")
    prompt, truncated = encoded.prompt, False
    if truncation_mode == "keep_end" and max_prompt_length is not None and len(prompt) > max_prompt_length:
        keep_bos = bos_token_id is not None and prompt[0] == bos_token_id and max_prompt_length > 1
        tail = prompt[len(prompt) - (max_prompt_length - keep_bos) :]
        prompt = [bos_token_id, *tail] if keep_bos else tail
        truncated = True

    room = max(max_length - len(prompt), 0)
    completions = []
    for ids in (encoded.chosen, encoded.rejected):
        if len(ids) > room:
            ids = ids[:room]  # cut at the end; the EOS goes with it
            truncated = True
        completions.append(ids)
    return TokenizedPair(
        prompt_input_ids=prompt,
        chosen_input_ids=completions[0],
        rejected_input_ids=completions[1],
        prompt_length=len(encoded.prompt),
        chosen_length=len(encoded.chosen),
        rejected_length=len(encoded.rejected),
        length=len(prompt) + max(len(c) for c in completions),
        truncated=truncated,
        dropped=min(len(c) for c in completions) == 0,
    )
