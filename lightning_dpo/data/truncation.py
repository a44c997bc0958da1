"""DPO's truncation rules, applied to one encoded pair (prompt ids, chosen ids, rejected ids).

A pair is as long as its longer row: prompt + the longer completion. A pair that fits ``max_length`` is
never cut. One that does not is cut by ``truncation_mode``:

- ``keep_end`` (the default): the prompt loses tokens from its *start* (the end of a dialogue matters most;
  a leading BOS stays in front), only as many as the pair needs to fit, and never below a floor of
  ``max_prompt_length`` tokens (``None``: half of ``max_length``); only then does a completion that still
  overflows lose its end. So a pair that does not fit keeps exactly ``max_length`` tokens of its longer row:
  no token goes that the pair had room for, and the floor only decides which end gives way.
- ``keep_start`` (TRL's default): prompt + completion keeps its first ``max_length`` tokens; the prompt is
  not cut on its own (``max_prompt_length`` is not used), so a prompt of ``max_length`` tokens or more
  leaves no completion token.

A completion cut at its end loses its EOS: the model must not learn that the cut point is where the answer
stops. A pair left with no completion token on either side cannot be trained on; it is marked ``dropped``
and the pipeline counts and reports it. Tokens cut are counted by cause in the data report (prompt starts,
completion ends), from the lengths kept beside the ids.
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


class EncodingProblem(NamedTuple):
    """A record an encoder cannot turn into ids: a bad record of ``kind`` (``BAD_RECORD_KINDS``)."""

    kind: str  # "template_error" | "template_mismatch" | "empty_prompt"
    message: str


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

    def __post_init__(self) -> None:
        if self.truncation_mode not in TRUNCATION_MODES:
            raise ValueError(f"truncation_mode must be one of {TRUNCATION_MODES}, got {self.truncation_mode!r}")
        if self.max_length < 2:
            raise ValueError(f"max_length must leave room for a prompt and a completion token, got {self.max_length}")
        if (
            self.truncation_mode == "keep_end"
            and self.max_prompt_length is not None
            and not 1 <= self.max_prompt_length < self.max_length
        ):
            raise ValueError(
                f"max_prompt_length ({self.max_prompt_length}), the prompt tokens keep_end keeps before it cuts "
                f"completions, must lie in [1, max_length) = [1, {self.max_length}) to leave room for completion "
                "tokens; or leave it unset (half of max_length)"
            )

    @property
    def prompt_floor(self) -> int:
        """The prompt tokens ``keep_end`` keeps (when the prompt has them) before it cuts a completion."""
        return self.max_prompt_length if self.max_prompt_length is not None else max(1, self.max_length // 2)


def truncate(encoded: Encoded, settings: TokenSettings, bos_token_id: int | None = None) -> TokenizedPair:
    """Apply ``settings`` (the module docstring's rules) to one encoded pair."""
    prompt, max_length = encoded.prompt, settings.max_length
    longest = max(len(encoded.chosen), len(encoded.rejected))
    if settings.truncation_mode == "keep_end":
        # As many prompt tokens as the longer completion leaves room for, but never fewer than the floor.
        keep = max(min(len(prompt), settings.prompt_floor), min(len(prompt), max_length - longest))
        prompt = keep_prompt_end(prompt, keep, bos_token_id)
    room = max(max_length - len(prompt), 0)
    chosen, rejected = encoded.chosen[:room], encoded.rejected[:room]  # cut at the end; the EOS goes with it
    return TokenizedPair(
        prompt_input_ids=prompt,
        chosen_input_ids=chosen,
        rejected_input_ids=rejected,
        prompt_length=len(encoded.prompt),
        chosen_length=len(encoded.chosen),
        rejected_length=len(encoded.rejected),
        length=len(prompt) + max(len(chosen), len(rejected)),
        truncated=len(prompt) + len(chosen) + len(rejected) < sum(len(ids) for ids in encoded),
        dropped=min(len(chosen), len(rejected)) == 0,
    )


def keep_prompt_end(prompt: list[int], keep: int, bos_token_id: int | None = None) -> list[int]:
    """The last ``keep`` tokens of ``prompt``, a leading BOS kept in front (counted in ``keep``)."""
    if len(prompt) <= keep:
        return prompt
    if bos_token_id is not None and prompt[0] == bos_token_id and keep > 1:
        return [bos_token_id, *prompt[len(prompt) - (keep - 1) :]]
    return prompt[len(prompt) - keep :]
