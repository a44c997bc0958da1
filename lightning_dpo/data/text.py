"""Tokenising text examples (``PreferenceExample``: prompt, chosen and rejected strings).

- The prompt gets the special tokens the tokenizer puts in front of a text (a Llama BOS), once: a prompt
  whose text already begins with the BOS string keeps just that one; a suffix the tokenizer would add (an
  EOS on ``add_eos_token`` tokenizers) is left off.
- Each completion is tokenised without special tokens and ends with exactly one EOS (a completion whose
  text already ends with the EOS string gets no second).
- Prompt and completions are tokenised separately, so the completion's first token never merges with the
  prompt's last.
"""

from __future__ import annotations

from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase

from lightning_dpo.data.formats import PreferenceExample
from lightning_dpo.data.truncation import Encoded


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
