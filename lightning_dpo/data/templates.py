"""Conversations through the tokenizer's chat template.

For a conversation (prompt messages, chosen messages, rejected messages) the template renders three texts,
and they are split as text examples are (:mod:`lightning_dpo.data.text`): each sequence is the tokenization
of its whole rendered text, and the shared prompt is the longest common prefix of the three:

    prompt_text = template(prompt, add_generation_prompt=True)     must be a prefix of both full texts
    full_text   = template(prompt + completion)
    prompt, chosen, rejected = split at the longest common prefix of their tokens

The rendered text is tokenised without adding special tokens (as ``apply_chat_template`` does): the template
decides about BOS, so a template with ``{{ bos_token }}`` gives exactly one BOS and a template without
gives none; a doubled leading BOS is collapsed. The completion ends with exactly one EOS: when the
template closes the assistant turn with EOS, anything it renders after the last EOS (a newline) is left
off, since generation stops at EOS; when it does not, an EOS is appended.

A conversation whose rendered prompt is not a prefix of the rendered full conversation (a template that
renders the prompt differently alone, such as an empty thinking block added only to the generation prompt),
or that the template refuses, is a bad record, reported rather than trained on with a shifted boundary.
Tokens that merge across the boundary are not a problem: they belong to the completions, as for text.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase

from lightning_dpo.data.formats import ChatExample
from lightning_dpo.data.text import MERGED_PROMPT, encode_batch, split_shared_prompt
from lightning_dpo.data.truncation import Encoded, EncodingProblem


def resolve_chat_template(value: str | None) -> str | None:
    """``data.chat_template``: a Jinja template, or the path of a file holding one."""
    if value is not None and "{" not in value and os.path.isfile(os.path.expanduser(value)):
        with open(os.path.expanduser(value), encoding="utf-8") as f:
            return f.read()
    return value


def require_template(tokenizer: PreTrainedTokenizerBase, chat_template: str | None) -> str:
    template = chat_template or getattr(tokenizer, "chat_template", None)
    if not template:
        raise ValueError(
            f"conversational records need a chat template, and the tokenizer {tokenizer.name_or_path!r} has none: "
            "set data.chat_template to a Jinja template or to a file that holds one"
        )
    return template


def encode_chats(
    examples: Sequence[ChatExample], tokenizer: PreTrainedTokenizerBase, chat_template: str | None = None
) -> list[Encoded | EncodingProblem]:
    """Render and tokenise conversations; each gives its :class:`Encoded` ids or a :class:`EncodingProblem`."""
    template = require_template(tokenizer, chat_template)
    rendered: list[tuple[str, str, str] | EncodingProblem] = []
    for example in examples:
        try:
            rendered.append(
                (
                    _render(tokenizer, template, example.prompt, add_generation_prompt=True),
                    _render(tokenizer, template, example.prompt + example.chosen),
                    _render(tokenizer, template, example.prompt + example.rejected),
                )
            )
        except Exception as e:  # jinja's TemplateError, or a template's own raise_exception()
            rendered.append(EncodingProblem("template_error", f"the chat template refused the conversation: {e}"))
    texts = [t for r in rendered if not isinstance(r, EncodingProblem) for t in r]
    ids = iter(encode_batch(tokenizer, texts))
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    out: list[Encoded | EncodingProblem] = []
    for r in rendered:
        if isinstance(r, EncodingProblem):
            out.append(r)
            continue
        prompt, full_chosen, full_rejected = (_single_bos(next(ids), bos) for _ in range(3))
        problem = _prefix_problem(r[0], r[1]) or _prefix_problem(r[0], r[2])
        if problem:
            out.append(problem)
            continue
        prompt, chosen, rejected = split_shared_prompt(prompt, full_chosen, full_rejected)
        if not prompt:
            out.append(EncodingProblem("empty_prompt", MERGED_PROMPT))
            continue
        out.append(Encoded(prompt, end_at_eos(chosen, eos), end_at_eos(rejected, eos)))
    return out


def end_at_eos(ids: list[int], eos: int) -> list[int]:
    """Cut what follows the last EOS, or append one when there is none."""
    if eos in ids:
        return ids[: len(ids) - ids[::-1].index(eos)]
    return [*ids, eos]


def _render(
    tokenizer: PreTrainedTokenizerBase, template: str, messages: list, add_generation_prompt: bool = False
) -> str:
    return tokenizer.apply_chat_template(
        messages, chat_template=template, tokenize=False, add_generation_prompt=add_generation_prompt
    )


def _single_bos(ids: list[int], bos: int | None) -> list[int]:
    while bos is not None and len(ids) > 1 and ids[0] == ids[1] == bos:
        ids = ids[1:]
    return ids


def _prefix_problem(prompt: str, full: str) -> EncodingProblem | None:
    """A problem when the rendered prompt is not where the rendered conversation begins."""
    if full.startswith(prompt):
        return None
    n = next((i for i, (a, b) in enumerate(zip(prompt, full)) if a != b), min(len(prompt), len(full)))
    return EncodingProblem(
        "template_mismatch",
        "the chat template renders the prompt alone (with add_generation_prompt) as "
        f"...{prompt[n : n + 40]!r} where the full conversation has ...{full[n : n + 40]!r}: the prompt is not a "
        "prefix, so the completion boundary is unknown (set data.chat_template to a template that renders both alike)",
    )
