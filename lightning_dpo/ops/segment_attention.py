"""Attention over a packed row that keeps its sequences apart.

A packed row (:func:`lightning_dpo.ops.packing.pack`) holds several sequences back to back, described by
spans: tokens [start, end) attend causally to themselves and to a prefix [prefix_start, prefix_end) (a
shared prompt; empty otherwise). How a model gets there depends on its attention implementation
(:func:`enable_segment_attention`):

- ``sdpa`` -> ``segments``: the model is switched, once, to ``lightning_dpo_sdpa``, which is exactly
  transformers' ``sdpa`` unless a call carries ``lightning_dpo_spans``; then it runs one SDPA call per span
  (causal, or with a small prefix + causal mask). The work is Σ Lᵢ·(Lᵢ + prefixᵢ), never S², and there is no
  (S, S) mask. The spans travel in the call's keyword arguments, so gradient checkpointing, which replays a
  layer in the backward pass, replays the same attention. Shared prompts need this kind.
- ``flash_attention_*`` -> ``flash``: transformers' own variable-length flash path, from the
  ``cu_seq_lens_*`` / ``max_length_*`` keyword arguments (sequence by sequence only).
- anything else (``eager``, ``flex_attention``, custom) -> ``mask``: transformers builds a block-diagonal
  causal mask from the restarting ``position_ids``. Correct, but dense: S² work and memory.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightning_dpo.ops.packing import PackedBatch, Span

NAME = "lightning_dpo_sdpa"
"""The attention implementation that ``sdpa`` models are switched to for packed rows."""

SPANS_KWARG = "lightning_dpo_spans"

_FLASH = ("flash_attention_2", "flash_attention_3", "flash_attention_4")


def segment_attention_forward(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    lightning_dpo_spans: tuple[Span, ...] | None = None,
    **kwargs,
) -> tuple[Tensor, None]:
    """transformers' attention-function interface: query (B, Hq, S, D), key/value (B, Hkv, S, D) ->
    (B, S, Hq, D). With ``lightning_dpo_spans`` (B = 1), attention within each span and its prefix only."""
    if lightning_dpo_spans is None:
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    for unsupported in ("softcap", "s_aux", "position_bias"):
        if kwargs.get(unsupported) is not None:
            raise ValueError(
                f"padding-free batching cannot apply the attention's {unsupported!r}; set padding_free=False"
            )
    if query.shape[0] != 1:
        raise ValueError(f"a packed batch has one row, got {query.shape[0]}")
    window = kwargs.get("sliding_window")
    return _split_span_attention(query, key, value, lightning_dpo_spans, dropout, scaling, window), None


_SDPA_GQA = tuple(int(x) for x in torch.__version__.split(".")[:2]) >= (2, 5)
"""Whether SDPA takes grouped-query heads as they are (``enable_gqa``, torch 2.5)."""


def _split_span_attention(
    query: Tensor,
    key: Tensor,
    value: Tensor,
    spans: tuple[Span, ...],
    dropout: float,
    scaling: float | None,
    window: int | None,
) -> Tensor:
    """query (1, Hq, S, D), key/value (1, Hkv, S, D) -> (1, S, Hq, D): each span attends to its prefix and,
    causally, to itself.

    Each tensor is split once, queries at the span boundaries and keys/values at every span and prefix
    boundary, rather than sliced once per span: a slice's backward writes its gradient into a zero tensor
    of the whole row (O(spans × S) work per layer), a split's backward is one concatenation. Grouped-query
    heads go to SDPA as they are (``enable_gqa``), so key/value heads are never repeated (no (Hq, S, D) copies
    to keep for backward, no ``index_select`` backward)."""
    length = query.shape[2]
    cuts = sorted({0, length, *(b for span in spans for b in span)})  # every boundary in the row
    first_piece = {start: i for i, start in enumerate(cuts[:-1])}
    queries = query.split([end - start for start, end, _, _ in spans], 2)
    keys = key.split([b - a for a, b in zip(cuts, cuts[1:])], 2)
    values = value.split([b - a for a, b in zip(cuts, cuts[1:])], 2)
    gqa = query.shape[1] != key.shape[1]
    if gqa and not _SDPA_GQA:  # torch < 2.5: repeat each key/value head for its query heads
        groups = query.shape[1] // key.shape[1]
        keys = tuple(k.repeat_interleave(groups, 1) for k in keys)
        values = tuple(v.repeat_interleave(groups, 1) for v in values)
    extra = {"enable_gqa": True} if gqa and _SDPA_GQA else {}

    def pieces(parts: tuple[Tensor, ...], start: int, end: int) -> list[Tensor]:
        """The split pieces that tile [start, end) (none when it is empty)."""
        out, i = [], first_piece.get(start)
        while start < end and i is not None and i < len(parts) and cuts[i] < end:
            out.append(parts[i])
            i += 1
        return out

    outputs = []
    for q, (start, end, prefix_start, prefix_end) in zip(queries, spans):
        k = _joined(pieces(keys, prefix_start, prefix_end) + pieces(keys, start, end))  # (1, Hkv, P + L, D)
        v = _joined(pieces(values, prefix_start, prefix_end) + pieces(values, start, end))
        prefix = prefix_end - prefix_start
        mask, causal = None, True
        if prefix or (window is not None and end - start > window):
            q_pos = prefix + torch.arange(end - start, device=q.device)  # positions within prefix + span
            diff = q_pos[:, None] - torch.arange(prefix + end - start, device=q.device)[None, :]  # (L, P + L)
            mask = diff >= 0
            if window is not None:  # sliding window: q − k < window
                mask &= diff < window
            causal = False
        outputs.append(
            F.scaled_dot_product_attention(
                q, k, v, attn_mask=mask, dropout_p=dropout, is_causal=causal, scale=scaling, **extra
            )
        )  # (1, Hq, L, D)
    return _joined(outputs).transpose(1, 2).contiguous()  # (1, S, Hq, D)


def _joined(parts: list[Tensor]) -> Tensor:
    """Concatenate along the sequence dimension (no copy for a single piece)."""
    return parts[0] if len(parts) == 1 else torch.cat(parts, 2)


def register() -> None:
    """Make ``lightning_dpo_sdpa`` known to transformers (attention, and mask creation as ``sdpa``'s)."""
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if NAME not in ALL_ATTENTION_FUNCTIONS:
        ALL_ATTENTION_FUNCTIONS.register(NAME, segment_attention_forward)
        ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)


def attention_kind(model: nn.Module) -> str:
    """How ``model`` keeps packed sequences apart (module docstring): ``segments``, ``flash`` or ``mask``."""
    kinds = {config._attn_implementation for config in _configs(model)}
    if kinds and kinds <= {"sdpa", NAME}:
        return "segments"
    if kinds and kinds <= set(_FLASH):
        return "flash"
    return "mask"


def enable_segment_attention(model: nn.Module) -> str:
    """:func:`attention_kind`, after switching an ``sdpa`` model to ``lightning_dpo_sdpa`` (idempotent; the
    switch changes nothing for unpacked calls, and is not saved with the model's config)."""
    kind = attention_kind(model)
    if kind == "segments":
        register()
        for config in _configs(model):
            config._attn_implementation = NAME
    return kind


def _configs(model: nn.Module) -> list:
    found = {
        id(m.config): m.config for m in model.modules() if hasattr(getattr(m, "config", None), "_attn_implementation")
    }
    return list(found.values())


def packed_call_kwargs(kind: str, packed: PackedBatch) -> dict:
    """Keyword arguments of the decoder's call on ``packed`` under ``kind`` (besides ids and positions)."""
    length = packed.input_ids.shape[1]
    if kind == "segments":
        # An all-ones mask makes transformers skip both mask creation (SDPA's is_causal path) and its
        # packed-sequence detection; the spans do the separating.
        ones = torch.ones(1, length, dtype=torch.long, device=packed.input_ids.device)
        return {"attention_mask": ones, SPANS_KWARG: packed.spans}
    if packed.shared_prompt:
        raise ValueError("a shared-prompt packing needs the 'segments' attention kind")
    if kind == "flash":
        cu, longest = packed.cu_seqlens, packed.max_length
        return {
            "attention_mask": None,
            "cu_seq_lens_q": cu,
            "cu_seq_lens_k": cu,
            "max_length_q": longest,
            "max_length_k": longest,
        }
    return {"attention_mask": None}
