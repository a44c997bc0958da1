"""LoRA through PEFT (an optional extra): wrapping the policy, and telling whether a model is wrapped."""

from __future__ import annotations

from typing import Any

from torch import nn


def require_peft() -> Any:
    try:
        import peft
    except ImportError as e:
        raise ImportError(
            "LoRA (model.lora) and reference_mode 'adapter' need the peft package: "
            "pip install 'lightning-dpo[peft]'"
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
