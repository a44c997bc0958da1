"""Tokenising a preference example, with DPO's truncation rules.

Text examples (``PreferenceExample``):

- The prompt gets the special tokens the tokenizer puts in front of a text (a Llama BOS), once: a prompt
  whose text already begins with the BOS string keeps just that one; a suffix the tokenizer would add (an
  EOS on ``add_eos_token`` tokenizers) is left off. Each completion is tokenised without special tokens
  and ends with exactly one EOS (a completion whose text already ends with the EOS string gets no second).
  Prompt and completions are tokenised separately, as TRL does, so the completion's first token never
  merges with the prompt's last.

Conversations (``ChatExample``) go through the chat template: see ``templates.py``.

Truncation, ``truncation_mode``:

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
from typing import Literal, NamedTuple, Sequence, TypedDict

from transformers import PreTrainedTokenizerBase

from lightning_dpo.data.formats import ChatExample, Example, PreferenceExample
from lightning_dpo.data.sources import PreferenceDataError

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


def tokenize_example(
    example: Example,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    max_prompt_length: int | None = None,
    truncation_mode: TruncationMode = "keep_end",
    chat_template: str | None = None,
) -> TokenizedPair:
    """Tokenise and truncate one example; raise :class:`PreferenceDataError` if its chat template fails it."""
    if isinstance(example, ChatExample):
        from lightning_dpo.data.templates import TemplateProblem, encode_chats

        (encoded,) = encode_chats([example], tokenizer, chat_template)
        if isinstance(encoded, TemplateProblem):
            raise PreferenceDataError("the example", "prompt", encoded.message, kind=encoded.kind)
    else:
        (encoded,) = encode_texts([example], tokenizer)
    return truncate(encoded, max_length, max_prompt_length, truncation_mode, tokenizer.bos_token_id)


def encode_texts(examples: Sequence[PreferenceExample], tokenizer: PreTrainedTokenizerBase) -> list[Encoded]:
    """Tokenise text examples in one batched call (see the module docstring for BOS and EOS)."""
    n = len(examples)
    texts = [e.prompt for e in examples] + [e.chosen for e in examples] + [e.rejected for e in examples]
    ids = encode_batch(tokenizer, texts)
    prefix = special_prefix(tokenizer)
    eos = tokenizer.eos_token_id
    out = []
    for i in range(n):
        prompt = ids[i] if ids[i][: len(prefix)] == prefix else prefix + ids[i]
        out.append(Encoded(prompt, with_eos(ids[n + i], eos), with_eos(ids[2 * n + i], eos)))
    return out


def encode_batch(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[list[int]]:
    """Token ids of each text, without special tokens (a fast tokenizer does the batch in parallel)."""
    if not texts:
        return []
    # verbose=False: no "longer than the model's maximum length" warning; truncation happens after this.
    return tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]


def special_prefix(tokenizer: PreTrainedTokenizerBase) -> list[int]:
    """The ids a tokenizer puts in front of a text with ``add_special_tokens=True`` (a BOS, or nothing)."""
    plain = tokenizer("Hello", add_special_tokens=False)["input_ids"]
    full = tokenizer("Hello", add_special_tokens=True)["input_ids"]
    for start in range(len(full) - len(plain) + 1):
        if full[start : start + len(plain)] == plain:
            return list(full[:start])
    return []


def with_eos(ids: list[int], eos: int) -> list[int]:
    """``ids`` ending with exactly one added EOS (none added when the text already ended with it)."""
    return ids if ids and ids[-1] == eos else [*ids, eos]


def truncate(
    encoded: Encoded,
    max_length: int,
    max_prompt_length: int | None = None,
    truncation_mode: TruncationMode = "keep_end",
    bos_token_id: int | None = None,
) -> TokenizedPair:
    """Apply ``truncation_mode`` (module docstring) to one encoded pair."""
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
