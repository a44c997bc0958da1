"""Tokenising text examples (``PreferenceExample``: prompt, chosen and rejected strings).

The rule: **each sequence is the tokenization of its whole text.** ``prompt + chosen`` and ``prompt +
rejected`` are tokenised as one text each, so the ids are the ones the model met in pre-training, whatever
the tokenizer does at the seam; the prompt is tokenised alone too, only to find the boundary:

    full_chosen   = tokens(prompt + chosen)          prompt_ids = tokens(prompt)
    full_rejected = tokens(prompt + rejected)
    n             = longest common prefix of prompt_ids, full_chosen and full_rejected
    prompt, chosen, rejected = full_chosen[:n], full_chosen[n:], full_rejected[n:]

So ``prompt + chosen`` is exactly ``full_chosen`` (and likewise rejected), and both completions follow one
shared prompt token sequence (the packed path runs it once). Where the tokenizer merges across the seam,
the tokens that differ belong to the completions:

- SentencePiece-layout tokenizers (a normalizer that prepends ``"▁"``: Llama-2, Mistral, Gemma-1) would give
  a completion tokenised alone a stray leading ``"▁"`` (``" I think"`` -> ``▁ ▁I ▁think``); here it is
  ``▁I ▁think``, as in running text;
- a prompt that ends in whitespace (``"…Assistant: "`` + ``"I think"``) would end with a lone space token
  and the answer's first word would lose its leading space; here the space stays with the word (``" I"``);
- byte-level BPE tokenizers that keep spaces at token starts (GPT-2, Llama-3, Qwen) split at the seam
  anyway, so for them the result equals tokenising the parts separately.

This is TRL's rule (``DPOTrainer._prepare_dataset``: the completion starts where the prompt's ids and the
whole text's diverge), applied to both completions at once so that they share their prompt.

Special tokens:

- the prompt gets the special tokens the tokenizer puts in front of a text (a Llama BOS), once: a text that
  already begins with the BOS string keeps just that one; a suffix the tokenizer would add (an EOS on
  ``add_eos_token`` tokenizers) is left off;
- each completion ends with exactly one EOS, appended as an id (none when the text already ends with the
  EOS string). An empty completion is the EOS alone.

A prompt whose every token merges into the completions (one word, no BOS) leaves no shared prompt token;
such a record is reported (``empty_prompt``), not trained on.
"""

from __future__ import annotations

from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase

from lightning_dpo.data.formats import PreferenceExample
from lightning_dpo.data.truncation import Encoded, EncodingProblem


def encode_texts(
    examples: Sequence[PreferenceExample], tokenizer: PreTrainedTokenizerBase
) -> list[Encoded | EncodingProblem]:
    """Tokenise text examples in one batched call (see the module docstring for the rule)."""
    n = len(examples)
    texts = [e.prompt for e in examples]
    texts += [e.prompt + e.chosen for e in examples] + [e.prompt + e.rejected for e in examples]
    prefix = special_prefix(tokenizer)
    ids = [with_prefix(i, prefix) for i in encode_batch(tokenizer, texts)]
    eos = tokenizer.eos_token_id
    out: list[Encoded | EncodingProblem] = []
    for i in range(n):
        prompt, chosen, rejected = split_shared_prompt(ids[i], ids[n + i], ids[2 * n + i])
        if not prompt:
            out.append(EncodingProblem("empty_prompt", MERGED_PROMPT))
            continue
        out.append(Encoded(prompt, with_eos(chosen, eos), with_eos(rejected, eos)))
    return out


MERGED_PROMPT = (
    "the prompt's tokens all merge with the completions' (a one-word prompt, and the tokenizer adds no BOS), "
    "so no prompt token is left to condition on"
)


def split_shared_prompt(
    prompt: list[int], full_chosen: list[int], full_rejected: list[int]
) -> tuple[list[int], list[int], list[int]]:
    """(shared prompt, chosen completion, rejected completion) from the prompt's own ids and the two whole
    tokenizations: the shared prompt is their longest common prefix, the rest belongs to each completion."""
    n = min(common_prefix_length(prompt, full_chosen), common_prefix_length(prompt, full_rejected))
    return full_chosen[:n], full_chosen[n:], full_rejected[n:]


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


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


def with_prefix(ids: list[int], prefix: list[int]) -> list[int]:
    """``ids`` starting with ``prefix`` once (a text that began with the BOS string already has it)."""
    return ids if ids[: len(prefix)] == prefix else [*prefix, *ids]


def with_eos(ids: list[int], eos: int) -> list[int]:
    """``ids`` ending with exactly one added EOS (none added when the text already ended with it)."""
    return ids if ids and ids[-1] == eos else [*ids, eos]
