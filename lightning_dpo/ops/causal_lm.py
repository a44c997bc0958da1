"""A Hugging Face causal LM as a decoder body and a plain linear head, or the reason it is not one.

The fast path runs ``body(input_ids, …).last_hidden_state`` and then applies the head only at the positions
DPO scores. That is right only when the model's logits are exactly ``transform(head(hidden))``, with
``transform`` one this package knows (a final soft-cap, a logit scale). :func:`split_causal_lm` accepts a
model on its structure; :func:`verify_split` then checks, once per model and split, that the split
reproduces the model's own logits on a few tokens, so an architecture with an unknown head falls back to
the full-logits path instead of training on wrong log-probs.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class CausalLMParts:
    body: nn.Module
    """The decoder: ``body(input_ids=…, attention_mask=…, position_ids=…).last_hidden_state`` is (B, T, H)."""
    head: nn.Linear
    """The LM head, an exact ``nn.Linear`` (tied or not to the input embeddings)."""
    logit_scale: float = 1.0
    """Logits are multiplied by this (Cohere ``logit_scale``, Granite 1 / ``logits_scaling``)."""
    softcap: float | None = None
    """Then soft-capped: c·tanh(z / c) (Gemma 2 ``final_logit_softcapping``)."""


def split_causal_lm(model: nn.Module) -> CausalLMParts | str:
    """The body and head of ``model`` (a ``PreTrainedModel`` or a PEFT wrapper of one), or why not."""
    if getattr(model, "_compiled_call_impl", None) is not None or type(model).__name__ == "OptimizedModule":
        return "the model is compiled as a whole; the fast path would run its decoder uncompiled"
    if hasattr(model, "_fsdp_wrapped_module") or type(model).__name__ == "FullyShardedDataParallel":
        return "the model is an FSDP unit, whose weights only its own forward gathers"
    base = model
    try:
        from peft import PeftModel

        if isinstance(model, PeftModel):
            if model.peft_config[model.active_adapter].is_prompt_learning:
                return "prompt-learning PEFT adapters add virtual tokens in the wrapper's forward"
            base = model.get_base_model()
    except ImportError:
        pass
    if not hasattr(base, "get_output_embeddings") or not hasattr(base, "get_decoder"):
        return f"{type(base).__name__} is not a Hugging Face PreTrainedModel"
    config = base.config
    if hasattr(config, "get_text_config") and config.get_text_config() is not config:
        return "multimodal models are not split"
    head = base.get_output_embeddings()
    if type(head) is not nn.Linear:
        kind = f"{type(head).__module__}.{type(head).__qualname__}"
        return f"the LM head is a {kind}, not a plain nn.Linear (e.g. a LoRA on lm_head)"
    body = base.get_decoder()
    if body is base or body is None:
        return f"{type(base).__name__}.get_decoder() does not return a separate decoder"
    if _sharded(head.weight):
        return "the LM head's weight is sharded (FSDP / DeepSpeed ZeRO-3)"
    if any(getattr(config, name, None) is not None for name in ("output_multiplier", "lm_head_multiplier")):
        return "the model applies a logit multiplier this package does not reproduce"
    scale = getattr(config, "logit_scale", None)
    scaling = getattr(config, "logits_scaling", None)
    if scale is not None and scaling is not None:
        return "the model sets both logit_scale and logits_scaling"
    if scaling is not None and config.model_type == "hyperclovax":
        return "hyperclovax multiplies by logits_scaling"
    logit_scale = float(scale) if scale is not None else (1.0 / float(scaling) if scaling is not None else 1.0)
    softcap = getattr(config, "final_logit_softcapping", None)
    return CausalLMParts(body, head, logit_scale, float(softcap) if softcap is not None else None)


def _sharded(weight: Tensor) -> bool:
    """Whether ``weight`` is a shard that the model's own forward gathers (FSDP1/2, DeepSpeed ZeRO-3)."""
    from torch.distributed.tensor import DTensor

    return isinstance(weight, DTensor) or hasattr(weight, "ds_id") or type(weight).__name__ == "FlatParameter"


def head_logits(parts: CausalLMParts, hidden: Tensor) -> Tensor:
    """transform(head(hidden)) in at least fp32: the split's logits (for :func:`verify_split`)."""
    z = parts.head(hidden)
    z = z.to(torch.promote_types(z.dtype, torch.float32)) * parts.logit_scale
    return parts.softcap * torch.tanh(z / parts.softcap) if parts.softcap is not None else z


_VERIFIED: weakref.WeakKeyDictionary[nn.Module, tuple[int, int, bool]] = weakref.WeakKeyDictionary()


def verify_split(model: nn.Module, parts: CausalLMParts, input_ids: Tensor, attention_mask: Tensor) -> bool:
    """Whether ``parts`` reproduce ``model``'s logits on the first tokens of one row. Run once per model and
    split (cached), in eval mode and without gradients; every module's train/eval mode is restored."""
    cached = _VERIFIED.get(model)
    key = (id(parts.body), id(parts.head))
    if cached is not None and cached[:2] == key:
        return cached[2]
    ids, mask = input_ids[:1, :16], attention_mask[:1, :16]
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            expected = model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()  # (1, t, V)
            actual = head_logits(
                parts, parts.body(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
            )
    finally:
        for module, mode in modes:
            module.training = mode
    half = parts.head.weight.dtype in (torch.float16, torch.bfloat16) or torch.is_autocast_enabled(ids.device.type)
    tol = (2e-2 if half else 1e-4) * max(1.0, float(expected.abs().max()))
    ok = expected.shape == actual.shape and bool((expected - actual.float()).abs().max() <= tol)
    _VERIFIED[model] = (*key, ok)
    return ok
