"""Tokenising a preference example, with DPO's truncation rules.

- The prompt is tokenised with the tokenizer's special tokens (a Llama-style tokenizer adds BOS); each
  completion without them, followed by EOS. The two are tokenised separately, as TRL does, so the
  completion's first token never merges with the prompt's last.
- ``max_prompt_length`` keeps the prompt's *last* tokens (the end of a dialogue matters most); a leading
  BOS is kept in front.
- ``max_length`` bounds prompt + completion. A completion that overflows is cut at its end and gets no
  EOS: the model must not learn that the cut point is where the answer stops.
- A pair whose prompt leaves no room for a completion token on either side cannot be trained on; it is
  marked ``dropped`` and the data module counts and reports it.
"""

from __future__ import annotations

from typing import TypedDict

from transformers import PreTrainedTokenizerBase

from lightning_dpo.data.formats import PreferenceExample


class TokenizedPair(TypedDict):
    prompt_input_ids: list[int]
    chosen_input_ids: list[int]  # completion only
    rejected_input_ids: list[int]  # completion only
    truncated: bool  # the prompt or a completion lost tokens
    dropped: bool  # no completion token left on a side


def tokenize_example(
    example: PreferenceExample,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    max_prompt_length: int | None = None,
) -> TokenizedPair:
    prompt = tokenizer(example.prompt, add_special_tokens=True)["input_ids"]
    bos = tokenizer.bos_token_id
    if bos is not None and prompt[:2] == [bos, bos]:  # the text already began with the BOS string
        prompt = prompt[1:]
    truncated = False
    if max_prompt_length is not None and len(prompt) > max_prompt_length:
        keep_bos = bos is not None and prompt[0] == bos and max_prompt_length > 1
        tail = prompt[len(prompt) - (max_prompt_length - keep_bos) :]
        prompt = [bos] + tail if keep_bos else tail
        truncated = True

    room = max_length - len(prompt)
    completions = []
    for text in (example.chosen, example.rejected):
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        if len(ids) > room:
            ids = ids[: max(room, 0)]  # cut at the end; the EOS goes with it
            truncated = True
        completions.append(ids)
    return TokenizedPair(
        prompt_input_ids=prompt,
        chosen_input_ids=completions[0],
        rejected_input_ids=completions[1],
        truncated=truncated,
        dropped=min(len(c) for c in completions) == 0,
    )
