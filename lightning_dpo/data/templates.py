"""Conversations through the tokenizer's chat template.

For a conversation (prompt messages, chosen messages, rejected messages):

    prompt_ids = tokens(template(prompt, add_generation_prompt=True))
    full_ids   = tokens(template(prompt + completion))
    completion = full_ids[len(prompt_ids):]            after checking full_ids starts with prompt_ids

The rendered text is tokenised without adding special tokens (as ``apply_chat_template`` does): the template
decides about BOS, so a template with ``{{ bos_token }}`` gives exactly one BOS and a template without
gives none; a doubled leading BOS is collapsed. The completion ends with exactly one EOS: when the
template closes the assistant turn with EOS, anything it renders after the last EOS (a newline) is left
off, since generation stops at EOS; when it does not, an EOS is appended.

A conversation whose prompt tokens are not a prefix of the full tokens (a template that renders the
prompt differently alone, or tokens merging across the boundary), or that the template refuses, is a bad
record, reported rather than trained on with a shifted boundary.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import NamedTuple

from transformers import PreTrainedTokenizerBase

from lightning_dpo.data.formats import ChatExample
from lightning_dpo.data.text import encode_batch
from lightning_dpo.data.truncation import Encoded


class TemplateProblem(NamedTuple):
    kind: str  # "template_error" | "template_mismatch"
    message: str


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
) -> list[Encoded | TemplateProblem]:
    """Render and tokenise conversations; each gives its :class:`Encoded` ids or a :class:`TemplateProblem`."""
    template = require_template(tokenizer, chat_template)
    rendered: list[tuple[str, str, str] | TemplateProblem] = []
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
            rendered.append(TemplateProblem("template_error", f"the chat template refused the conversation: {e}"))
    texts = [t for r in rendered if not isinstance(r, TemplateProblem) for t in r]
    ids = iter(encode_batch(tokenizer, texts))
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    out: list[Encoded | TemplateProblem] = []
    for r in rendered:
        if isinstance(r, TemplateProblem):
            out.append(r)
            continue
        prompt, full_chosen, full_rejected = (_single_bos(next(ids), bos) for _ in range(3))
        problem = _prefix_problem(tokenizer, prompt, full_chosen) or _prefix_problem(tokenizer, prompt, full_rejected)
        if problem:
            out.append(problem)
            continue
        n = len(prompt)
        out.append(Encoded(prompt, end_at_eos(full_chosen[n:], eos), end_at_eos(full_rejected[n:], eos)))
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


def _prefix_problem(tokenizer: PreTrainedTokenizerBase, prompt: list[int], full: list[int]) -> TemplateProblem | None:
    if full[: len(prompt)] == prompt and len(full) > len(prompt):
        return None
    n = next((i for i, (a, b) in enumerate(zip(prompt, full)) if a != b), min(len(prompt), len(full)))
    return TemplateProblem(
        "template_mismatch",
        "the chat template renders the prompt alone (with add_generation_prompt) as "
        f"...{tokenizer.decode(prompt[n : n + 8])!r} "
        f"where the full conversation has ...{tokenizer.decode(full[n : n + 8])!r}: the prompt is not a prefix, so the "
        "completion boundary is unknown (set data.chat_template to a template that renders both alike)",
    )
