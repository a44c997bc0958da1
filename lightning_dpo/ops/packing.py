"""Where the completion tokens of a batch sit, and padding-free packing of a batch into one row.

A concatenated batch (see :mod:`lightning_dpo.logps`) holds N = 2B right-padded rows of width T, chosen
rows first. DPO needs the model's output only at positions whose *next* token is a completion token:
position t of row n when ``completion_mask[n, t + 1]`` is 1. :func:`token_layout` lists those K positions.

:func:`pack` lays the batch out as one row of S tokens without padding, in one of two ways:

- sequence by sequence: the N real sequences back to back, position ids restarting at 0 in each;
- prompt shared (``share_prompt``): per pair, its prompt once, then the chosen completion, then the rejected
  completion. The chosen tokens see the prompt and the earlier chosen tokens; the rejected tokens see the
  prompt and the earlier rejected tokens (never the chosen ones), and keep the position ids they have in
  their own row. Every output equals the unshared one, and the prompt (about two thirds of the tokens in
  multi-turn data) runs through the model once instead of twice; its gradient is the sum of both uses.

A batch of rankings holds K completions per prompt: N = K·B rows, rank-major (rows k·B + i for
k = 0..K−1 are prompt i's completions; :func:`group_size` reads K from its ``scores``, (B, K)). A pair is
the case K = 2, and everything above holds per group: with ``share_prompt`` each prompt runs once for its
K completions, the first completion's span holding it and the other K − 1 attending to it.

The attention spans that keep sequences apart go with the packed row (``spans``; see
:mod:`lightning_dpo.ops.segment_attention`). :func:`batch_padding_fraction` is the share of the batch's (N, T)
slots that are padding.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor


class TokenLayout(NamedTuple):
    """The K completion targets of a batch, in row-major order (sequence by sequence, left to right)."""

    rows: Tensor
    """(K,) the sequence of each target."""
    cols: Tensor
    """(K,) the position t whose output predicts the target token (at t + 1)."""
    labels: Tensor
    """(K,) the target token ids."""
    num_sequences: int
    """N, the rows of the batch."""


Span = tuple[int, int, int, int]
"""(start, end, prefix_start, prefix_end) in the packed row: tokens [start, end) attend causally to
themselves and to all of [prefix_start, prefix_end) (empty when the two are equal)."""


class PackedBatch(NamedTuple):
    """The real tokens of a batch as one row of S tokens."""

    input_ids: Tensor
    """(1, S) token ids."""
    position_ids: Tensor
    """(1, S) each token's position in its own row of the padded batch."""
    spans: tuple[Span, ...]
    """Attention spans covering [0, S) in order (see :data:`Span`)."""
    cu_seqlens: Tensor
    """(M + 1,) int32 boundaries of the spans (for variable-length kernels; prefix-free packing only)."""
    max_length: int
    """The longest span."""
    index: Tensor
    """(K,) the packed position of each completion target's predicting output (``TokenLayout`` order)."""
    shared_prompt: bool
    """Whether each pair's prompt appears once."""
    tokens_per_sequence: Tensor
    """(N,) tokens of each row of the batch in the packed row (a shared prompt counts for its group's first row)."""
    span_rows: tuple[int, ...] = ()
    """The batch row each span of ``spans`` holds."""

    def token_owners(self) -> tuple[Tensor, Tensor]:
        """(tokens, owners): packed position ``tokens[i]`` is a token of batch row ``owners[i]``. A shared prompt
        token is listed for both its chosen and its rejected row, as each row holds it when padded."""
        tokens, owners = [], []
        for (start, end, prefix_start, prefix_end), row in zip(self.spans, self.span_rows):
            for first, last in ((prefix_start, prefix_end), (start, end)):
                tokens.append(torch.arange(first, last))
                owners.append(torch.full((last - first,), row))
        device = self.input_ids.device
        return torch.cat(tokens).to(device), torch.cat(owners).to(device)


def padded_token_owners(attention_mask: Tensor) -> tuple[Tensor, Tensor]:
    """(tokens, owners) of a padded (N, T) batch seen as N·T tokens in row-major order: its real tokens and rows."""
    tokens = attention_mask.reshape(-1).bool().nonzero().squeeze(1)
    return tokens, tokens // attention_mask.shape[1]


def token_layout(batch: dict[str, Tensor]) -> TokenLayout:
    """The completion targets of ``batch``."""
    input_ids, completion_mask = batch["input_ids"], batch["completion_mask"]
    rows, cols = completion_mask[:, 1:].bool().nonzero(as_tuple=True)  # (K,), (K,): row-major order
    return TokenLayout(rows, cols, input_ids[rows, cols + 1], input_ids.shape[0])


def sequence_lengths(attention_mask: Tensor) -> Tensor | None:
    """(N,) real tokens per row, or ``None`` when some row is not a prefix of ones (left padding, holes):
    only right-padded rows can be packed by length."""
    lengths = attention_mask.sum(-1)  # (N,)
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    if not torch.equal(attention_mask.bool(), positions < lengths[:, None]):
        return None
    return lengths


def group_size(batch: dict[str, Tensor]) -> int:
    """K, the rows per prompt: a rankings batch's ``scores`` are (B, K); a batch of pairs has 2."""
    scores = batch.get("scores")
    return 2 if scores is None else int(scores.shape[1])


def group_rows(n: int, k: int) -> list[int]:
    """Batch rows in group order: prompt 0's K rows (0, B, 2B, …), then prompt 1's, …, with B = n / K."""
    b = n // k
    return [i + j * b for i in range(b) for j in range(k)]


def shared_prompt_lengths(batch: dict[str, Tensor]) -> Tensor | None:
    """(B,) prompt lengths when rows i, B + i, …, (K − 1)·B + i hold the same, non-empty prompt for every
    prompt i (so the prompt can be shared), else ``None``."""
    input_ids, completion = batch["input_ids"], batch["completion_mask"].bool()
    n, width = input_ids.shape
    k = group_size(batch)
    if n % k or not bool(completion.any(-1).all()):
        return None
    prompt = completion.int().argmax(-1).view(k, n // k)  # (K, B) index of the first completion token
    first = prompt[0]
    if not bool((prompt == first).all()) or not bool((first >= 1).all()):
        return None
    in_prompt = torch.arange(width, device=input_ids.device) < first[:, None]  # (B, T)
    ids = input_ids.view(k, n // k, width)
    if not bool(((ids == ids[:1]) | ~in_prompt).all()):
        return None
    return first


def pack(batch: dict[str, Tensor], layout: TokenLayout, *, share_prompt: bool = False) -> PackedBatch | None:
    """The batch as one padding-free row (module docstring), or ``None`` when its rows are not right-padded.
    With ``share_prompt``, pairs whose rows do not share a prompt are packed sequence by sequence instead."""
    attention_mask, input_ids = batch["attention_mask"], batch["input_ids"]
    if sequence_lengths(attention_mask) is None:
        return None
    n, width = attention_mask.shape
    device = input_ids.device
    cols = torch.arange(width, device=device)
    keep = attention_mask.bool()  # (N, T) tokens that enter the packed row
    prompt = shared_prompt_lengths(batch) if share_prompt else None
    k = group_size(batch)
    b = n // k
    if prompt is None:
        order = torch.arange(n, device=device)  # rows in batch order
    else:
        keep[b:] &= cols >= prompt.repeat(k - 1)[:, None]  # a later row of a group keeps only its completion
        order = torch.tensor(group_rows(n, k), device=device)
    keep_o = keep[order]  # (N, T) in packing order: chosen 0, rejected 0, chosen 1, … when shared
    packed_ids = input_ids[order][keep_o]  # (S,)
    position_ids = cols.expand(n, width)[keep_o]  # (S,): a token's position in its own row
    where = torch.full((n, width), -1, dtype=torch.long, device=device)
    where_o = torch.full_like(where, -1)
    where_o[keep_o] = torch.arange(packed_ids.shape[0], device=device)
    where[order] = where_o  # (N, T): packed position of each kept token
    if prompt is not None:  # a later row's prompt tokens are its group's first row's
        where[b:] = torch.where(keep[b:], where[b:], where[:b].repeat(k - 1, 1))
    counts = keep_o.sum(-1)  # (N,) tokens per span, in packing order
    starts = counts.cumsum(0) - counts
    cu_seqlens = torch.zeros(n + 1, dtype=torch.int32, device=device)
    cu_seqlens[1:] = counts.cumsum(0)
    bounds = torch.stack([starts, counts], 1).tolist()  # one host sync for the whole batch
    prompts = prompt.tolist() if prompt is not None else None
    spans = []
    for j, (start, count) in enumerate(bounds):
        if prompts is not None and j % k:  # a later completion of a group: the group's prompt is its prefix
            prefix = bounds[j - j % k][0]
            spans.append((start, start + count, prefix, prefix + prompts[j // k]))
        else:
            spans.append((start, start + count, start, start))
    return PackedBatch(
        packed_ids[None],
        position_ids[None],
        tuple(spans),
        cu_seqlens,
        max(c for _, c in bounds),
        where[layout.rows, layout.cols],
        prompt is not None,
        keep.sum(-1),
        tuple(range(n)) if prompt is None else tuple(group_rows(n, k)),
    )


def batch_padding_fraction(batch: dict[str, Tensor]) -> Tensor:
    """The share of the batch's (N, T) token slots that are padding: what padding-free batching saves."""
    mask = batch["attention_mask"]
    return 1.0 - mask.sum() / mask.numel()
