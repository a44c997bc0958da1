"""Loading causal LMs and tokenizers from Hugging Face ids, local directories or the embedded default; LoRA
through PEFT (an optional extra)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from lightning_dpo.embedded import is_embedded, resolve_model
from lightning_dpo.errors import UserError

POSITION_FIELDS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length", "n_ctx")
"""Config fields that hold a model's longest sequence, by architecture (Llama, GPT-2, ...)."""


class TokenizerError(UserError, ValueError):
    """A tokenizer that DPO cannot use (no EOS token), named with what to do."""


class SequenceTooLong(UserError, ValueError):
    """Pairs longer than the model has positions for; the message names both lengths and the setting."""


_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_causal_lm(
    name_or_path: str,
    *,
    dtype: str | None = None,
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
    quantization: dict | None = None,
) -> PreTrainedModel:
    """``AutoModelForCausalLM.from_pretrained`` with the embedded default resolved.

    ``dtype``: ``None`` (the default dtype: float32, or the Trainer's ``bf16-true`` / ``16-true``), ``"auto"``
    (the checkpoint's own dtype), or ``"float32"`` / ``"bfloat16"`` / ``"float16"``. ``quantization``:
    ``BitsAndBytesConfig`` keys for a k-bit base (QLoRA; needs a GPU and ``bitsandbytes``).
    """
    if dtype not in (None, "auto", *_DTYPES):
        raise ValueError(f"dtype must be one of None, 'auto', {list(_DTYPES)}; got {dtype!r}")
    kwargs: dict = {"trust_remote_code": trust_remote_code, "local_files_only": is_embedded(name_or_path)}
    # None: the default dtype, float32 -- or bfloat16 inside Lightning's init context under ``bf16-true``, so
    # the weights load in bf16 directly instead of in float32 and then converted (twice the peak memory).
    kwargs["dtype"] = _DTYPES.get(dtype, torch.get_default_dtype()) if dtype != "auto" else "auto"
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    if quantization is not None:  # QLoRA: a k-bit base through bitsandbytes (GPU only)
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(**quantization)
    return AutoModelForCausalLM.from_pretrained(resolve_model(name_or_path), **kwargs)


def load_tokenizer(name_or_path: str, *, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    """``AutoTokenizer.from_pretrained`` with the embedded default resolved. A missing pad token falls
    back to EOS (masks come from lengths, so padding with EOS is harmless)."""
    tokenizer = AutoTokenizer.from_pretrained(
        resolve_model(name_or_path), trust_remote_code=trust_remote_code, local_files_only=is_embedded(name_or_path)
    )
    if tokenizer.eos_token_id is None:
        raise TokenizerError(
            f"tokenizer {name_or_path!r} has no EOS token, and DPO completions must end with one: use a tokenizer "
            "that has one (data.tokenizer_name_or_path), or add one (tokenizer.eos_token = ...; save_pretrained)"
        )
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def max_positions(config: Any) -> int | None:
    """The longest sequence a model config allows (``max_position_embeddings``, ``n_positions``, ...), or None
    when the config names no limit."""
    config = getattr(config, "get_text_config", lambda: config)()  # multimodal configs nest the decoder's
    for field in POSITION_FIELDS:
        value = getattr(config, field, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def source_max_positions(name_or_path: str, trust_remote_code: bool = False) -> int | None:
    """:func:`max_positions` of a model source's ``config.json``, without loading weights; None when it has
    no readable config."""
    try:
        config = AutoConfig.from_pretrained(
            resolve_model(name_or_path), trust_remote_code=trust_remote_code, local_files_only=is_embedded(name_or_path)
        )
    except (OSError, ValueError):
        return None
    return max_positions(config)


def disable_dropout(model: nn.Module) -> None:
    """Zero every dropout probability (TRL's ``disable_dropout``): ``nn.Dropout`` modules and the float
    ``attention_dropout`` that attention layers apply functionally. With dropout off, a policy equal to its
    reference gives rewards of exactly 0 and a loss of exactly ln 2. The config is left as loaded, so an
    exported model keeps its original dropout settings."""
    for module in model.modules():
        if isinstance(module, nn.modules.dropout._DropoutNd):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):
            module.attention_dropout = 0.0


def vocab_size(model: PreTrainedModel) -> int:
    """Rows of the output embedding: the size of the distribution the log-probs are taken over."""
    head = model.get_output_embeddings()
    return head.weight.shape[0] if head is not None else model.config.vocab_size


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """Recompute each decoder layer's activations in backward (non-reentrant ``torch.utils.checkpoint``, which
    works with frozen embeddings and FSDP). ``transformers`` skips it whenever grad is off, so a no-grad pass
    through the same network runs plain."""
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x; the old name warns there
        model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


# -- LoRA (PEFT) ----------------------------------------------------------------------------------------


def require_peft() -> Any:
    try:
        import peft
    except ImportError as e:
        raise ImportError(
            "LoRA (model.lora) and reference_mode 'adapter' need the peft package: pip install 'lightning-dpo[peft]'"
        ) from e
    return peft


def apply_lora(model: nn.Module, lora: dict[str, Any]) -> nn.Module:
    """Wrap ``model`` in a PEFT LoRA adapter named ``default``. ``lora`` holds ``peft.LoraConfig``'s own
    keys (``r``, ``lora_alpha``, ``lora_dropout``, ``target_modules``, ...).

    A k-bit base (loaded with a bitsandbytes ``quantization`` config: QLoRA) is first prepared with
    ``peft.prepare_model_for_kbit_training``. LoRA's B matrices start at zero, so the wrapped model computes
    exactly what the base does until the first update.
    """
    peft = require_peft()
    if getattr(model, "is_loaded_in_4bit", False) or getattr(model, "is_loaded_in_8bit", False):
        model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    config = peft.LoraConfig(**{"task_type": "CAUSAL_LM", **lora})
    return peft.get_peft_model(model, config)


def is_peft_model(model: nn.Module) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)
