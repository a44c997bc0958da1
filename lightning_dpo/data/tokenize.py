"""Examples -> token ids, truncated: the one dispatcher for every kind of example.

Each kind has its encoder, which tokenises a batch of examples into :class:`~lightning_dpo.data.truncation.Encoded`
ids (prompt with BOS, completions ending with EOS) or an :class:`~lightning_dpo.data.truncation.EncodingProblem`
(a bad record). Every encoder follows one rule: each sequence is the tokenization of its whole text, and the
shared prompt is where the ids diverge (:mod:`lightning_dpo.data.text`).

- text (``PreferenceExample``): :mod:`lightning_dpo.data.text`;
- conversations (``ChatExample``): the chat template, :mod:`lightning_dpo.data.templates`.

:func:`tokenize_examples` groups a batch by kind, runs each encoder once over its group, and applies the
truncation rules (:mod:`lightning_dpo.data.truncation`) with the same :class:`TokenSettings`. A new kind of
example is its type in ``formats.py`` and one entry in ``ENCODERS``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from transformers import PreTrainedTokenizerBase

from lightning_dpo.data.formats import ChatExample, Example, PreferenceExample
from lightning_dpo.data.sources import PreferenceDataError
from lightning_dpo.data.templates import encode_chats
from lightning_dpo.data.text import encode_texts
from lightning_dpo.data.truncation import Encoded, EncodingProblem, TokenizedPair, TokenSettings, truncate

Encoder = Callable[[Sequence[Example], PreTrainedTokenizerBase, TokenSettings], list[Encoded | EncodingProblem]]

ENCODERS: dict[type, Encoder] = {
    PreferenceExample: lambda examples, tokenizer, settings: encode_texts(examples, tokenizer),
    ChatExample: lambda examples, tokenizer, settings: encode_chats(examples, tokenizer, settings.chat_template),
}
"""Example type -> its batched encoder."""


def tokenize_examples(
    examples: Sequence[Example], tokenizer: PreTrainedTokenizerBase, settings: TokenSettings
) -> list[TokenizedPair | EncodingProblem]:
    """Tokenise and truncate ``examples`` (of any kinds), in order; one batched encoder call per kind."""
    out: list[TokenizedPair | EncodingProblem | None] = [None] * len(examples)
    for kind, encode in ENCODERS.items():
        positions = [i for i, e in enumerate(examples) if isinstance(e, kind)]
        if not positions:
            continue
        for i, encoded in zip(positions, encode([examples[i] for i in positions], tokenizer, settings)):
            out[i] = (
                encoded if isinstance(encoded, EncodingProblem) else truncate(encoded, settings, tokenizer.bos_token_id)
            )
    unknown = [type(examples[i]).__name__ for i, o in enumerate(out) if o is None]
    if unknown:
        raise TypeError(f"no encoder for example type(s) {sorted(set(unknown))}; register one in ENCODERS")
    return out


def tokenize_example(example: Example, tokenizer: PreTrainedTokenizerBase, settings: TokenSettings) -> TokenizedPair:
    """Tokenise and truncate one example; raise :class:`PreferenceDataError` if it cannot be encoded."""
    (result,) = tokenize_examples([example], tokenizer, settings)
    if isinstance(result, EncodingProblem):
        raise PreferenceDataError("the example", "prompt", result.message, kind=result.kind)
    return result
