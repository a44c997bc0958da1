"""Final hidden states at the completion targets of a batch: the decoder body only, padded or packed.

:func:`completion_hidden` splits the model (:mod:`lightning_dpo.ops.causal_lm`), runs its body on the
batch, either as it is (N, T) or as one packed row (:mod:`lightning_dpo.ops.packing`), and gathers the K hidden
states whose next token is a completion token. Packing is checked once per model, attention kind and
layout against the unpacked body on the batch's first pair, in eval mode without gradients; a model whose
attention does not honour the packed layout (an unknown implementation) stays unpacked, with a warning.
"""

from __future__ import annotations

import warnings
import weakref
from typing import NamedTuple

import torch
from torch import Tensor, nn

from lightning_dpo.ops.causal_lm import CausalLMParts, split_causal_lm, verify_split
from lightning_dpo.ops.packing import PackedBatch, TokenLayout, group_size, pack, token_layout
from lightning_dpo.ops.segment_attention import attention_kind, enable_segment_attention, packed_call_kwargs


class CompletionHidden(NamedTuple):
    parts: CausalLMParts
    layout: TokenLayout
    hidden: Tensor
    """(K, H) final hidden states at the positions that predict completion tokens."""
    packed: PackedBatch | None
    """The packed row the body ran on, or ``None`` (padded)."""
    router_logits: tuple[Tensor, ...] | None = None
    """A mixture-of-experts body's (S, E) router logits per MoE layer, over the tokens it ran on, when asked."""


def completion_hidden(
    model: nn.Module,
    batch: dict[str, Tensor],
    *,
    padding_free: bool | None = None,
    share_prompt: bool | None = None,
    router_logits: bool = False,
) -> CompletionHidden | None:
    """The hidden states DPO needs, or ``None`` when the model cannot be split (use full logits).

    ``padding_free`` / ``share_prompt``: ``None`` packs (sharing each pair's prompt) where it pays: on a CPU
    with ``sdpa`` attention (per-span attention, no mask), and without prompt sharing with flash attention.
    ``router_logits``: also return a mixture-of-experts body's router logits (``output_router_logits``).
    """
    parts = _split(model, batch)
    if parts is None:
        return None
    layout = _plan(batch).layout
    packed = _packing(model, parts, batch, layout, padding_free, share_prompt)
    hidden, routers = _hidden(model, parts, batch, layout, packed, router_logits=router_logits)
    return CompletionHidden(parts, layout, hidden, packed, routers)


def resolve_packing(
    model: nn.Module, device: torch.device, padding_free: bool | None, share_prompt: bool | None
) -> tuple[bool, bool]:
    """(pack, share the prompt) for ``model`` on ``device`` under the options (see :func:`completion_hidden`)."""
    kind = attention_kind(model)
    auto = device.type == "cpu" and kind == "segments"
    share = (auto if share_prompt is None else share_prompt) and kind == "segments"
    packed = (auto or kind == "flash") if padding_free is None else padding_free
    return packed or share, share


def _split(model: nn.Module, batch: dict[str, Tensor]) -> CausalLMParts | None:
    parts = split_causal_lm(model)
    name = type(model).__name__
    if isinstance(parts, str):
        _warn_once(f"split:{name}", f"lightning_dpo: full-logits log-probs for {name}: {parts}")
        return None
    if not verify_split(model, parts, batch["input_ids"], batch["attention_mask"]):
        _warn_once(
            f"split:{name}",
            f"lightning_dpo: full-logits log-probs for {name}: its decoder + LM head do not "
            "reproduce its logits (an unknown logit transform)",
        )
        return None
    return parts


def _packing(
    model: nn.Module,
    parts: CausalLMParts,
    batch: dict[str, Tensor],
    layout: TokenLayout,
    padding_free: bool | None,
    share_prompt: bool | None,
) -> PackedBatch | None:
    packed_on, share = resolve_packing(model, batch["input_ids"].device, padding_free, share_prompt)
    if not packed_on:
        return None
    plan = _plan(batch)
    if share not in plan.packed:
        plan.packed[share] = pack(batch, layout, share_prompt=share)
    packed = plan.packed[share]
    if packed is None:
        return None
    kind = enable_segment_attention(model)
    if not _packing_verified(model, parts, batch, kind, packed.shared_prompt):
        _warn_once(
            f"pack:{type(model).__name__}:{kind}",
            f"lightning_dpo: no padding-free batches for "
            f"{type(model).__name__}: its {kind!r} attention does not keep packed sequences apart",
        )
        return None
    return packed


def _hidden(
    model: nn.Module,
    parts: CausalLMParts,
    batch: dict[str, Tensor],
    layout: TokenLayout,
    packed: PackedBatch | None,
    router_logits: bool = False,
) -> tuple[Tensor, tuple[Tensor, ...] | None]:
    """(K, H) from the padded (N, T) batch or the packed (1, S) row, and the router logits when asked."""
    extra = {"output_router_logits": True} if router_logits else {}
    if packed is None:
        out = parts.body(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False, **extra)
        hidden = out.last_hidden_state[layout.rows, layout.cols]  # (N, T, H) -> (K, H)
    else:
        kwargs = packed_call_kwargs(attention_kind(model), packed)
        out = parts.body(
            input_ids=packed.input_ids, position_ids=packed.position_ids, use_cache=False, **kwargs, **extra
        )
        hidden = out.last_hidden_state[0, packed.index]  # (1, S, H) -> (K, H)
    return hidden, (tuple(out.router_logits) if router_logits else None)


_PACKING_VERIFIED: weakref.WeakKeyDictionary[nn.Module, dict[tuple, bool]] = weakref.WeakKeyDictionary()


def _packing_verified(
    model: nn.Module, parts: CausalLMParts, batch: dict[str, Tensor], kind: str, shared: bool
) -> bool:
    """Whether the packed body reproduces the padded body on the batch's first pair (or first prompt's K
    completions; cached per model)."""
    verdicts = _PACKING_VERIFIED.setdefault(model, {})
    key = (id(parts.body), kind, shared, group_size(batch))
    if key in verdicts:
        return verdicts[key]
    k = group_size(batch)
    first = [j * (batch["input_ids"].shape[0] // k) for j in range(k)]  # the first prompt's K rows
    pair = {name: batch[name][first] for name in ("input_ids", "attention_mask", "completion_mask")}
    if "scores" in batch:
        pair["scores"] = batch["scores"][:1]
    layout = token_layout(pair)
    packed = pack(pair, layout, share_prompt=shared)
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            expected = _hidden(model, parts, pair, layout, None)[0].float()
            actual = _hidden(model, parts, pair, layout, packed)[0].float() if packed is not None else None
    finally:
        for module, mode in modes:
            module.training = mode
    half_precision = parts.head.weight.dtype in (torch.float16, torch.bfloat16) or torch.is_autocast_enabled(
        expected.device.type
    )
    tol = (2e-2 if half_precision else 1e-4) * max(1.0, float(expected.abs().max()))
    ok = actual is not None and bool((expected - actual).abs().max() <= tol)
    verdicts[key] = ok
    return ok


class _BatchPlan:
    """What the policy's and the reference's calls on the same batch share: its layout and packings."""

    def __init__(self, key: tuple[Tensor, ...], layout: TokenLayout) -> None:
        self.key, self.layout = key, layout
        self.packed: dict[bool, PackedBatch | None] = {}


_LAST_PLAN: list[_BatchPlan] = []


def _plan(batch: dict[str, Tensor]) -> _BatchPlan:
    """The plan of ``batch``, reused while the same batch tensors come back (one entry: the current batch)."""
    key = (batch["input_ids"], batch["completion_mask"], batch["attention_mask"])
    if _LAST_PLAN and all(a is b for a, b in zip(_LAST_PLAN[0].key, key)):
        return _LAST_PLAN[0]
    _LAST_PLAN[:] = [_BatchPlan(key, token_layout(batch))]
    return _LAST_PLAN[0]


_WARNED: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _WARNED:
        _WARNED.add(key)
        warnings.warn(message, stacklevel=5)
