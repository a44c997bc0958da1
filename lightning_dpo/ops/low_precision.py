"""A frozen model whose weights are stored in a narrower dtype than they compute in (``reference.dtype``).

On a GPU a bf16 reference simply runs in bf16. A CPU without bf16 matmul units (AVX2-only x86, where a bf16
2048³ matmul runs ~100x slower than fp32) would lose far more time than it saves memory, so there
:func:`store_parameters_in` keeps the weights in the narrow dtype (half the bytes) and each module that owns
parameters gets them in the compute dtype for the duration of its own forward only: the transient is one
module's weights (a decoder layer's largest linear, 17 MB at Qwen2.5-0.5B), and the matmuls stay fp32. An
embedding looks its rows up in the narrow dtype and casts the (tokens, H) result, the same numbers (bf16 ->
fp32 is exact). The fused LM head reads the head weight directly and upcasts it slice by slice
(``fused_head._block``).

Only parameters are converted: buffers (rotary frequencies) keep their precision. The log-prob maths
(logsumexp, gather, sums) run in at least fp32 whatever the weights' dtype.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
"""The dtypes a frozen model can be stored in, by name."""


def store_parameters_in(model: nn.Module, storage: torch.dtype) -> int:
    """Convert ``model``'s floating-point parameters to ``storage`` in place (tied ones once), and hook every
    module that owns some so that, on a CPU, its forward sees them in the dtype they had. Frozen models only.
    Returns the bytes saved."""
    saved = 0
    original: dict[int, torch.dtype] = {}  # tied parameters are converted once, by the first module that owns them
    for module in model.modules():
        own = [p for p in module.parameters(recurse=False) if p.is_floating_point()]
        if not own:
            continue
        if any(p.requires_grad for p in own):
            raise ValueError("store_parameters_in is for frozen models: some parameters require grad")
        compute = original.get(id(own[0]), own[0].dtype)
        if compute.itemsize <= storage.itemsize:
            continue  # nothing to gain (already as narrow)
        for p in own:
            if id(p) not in original:
                original[id(p)] = p.dtype
                saved += p.numel() * (p.element_size() - storage.itemsize)
                p.data = p.data.to(storage)
        if isinstance(module, nn.Embedding):
            module.register_forward_hook(_cast_output(compute))
        else:
            module.register_forward_pre_hook(_upcast_parameters(compute))
            module.register_forward_hook(_restore_parameters)
    return saved


def _cast_output(compute: torch.dtype):
    def hook(module: nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        return output.to(compute) if output.device.type == "cpu" else output

    return hook


def _upcast_parameters(compute: torch.dtype):
    def hook(module: nn.Module, args: Any) -> None:
        stored = {}
        for name, p in module._parameters.items():
            if p is not None and p.is_floating_point() and p.dtype != compute and p.device.type == "cpu":
                stored[name] = p
                module._parameters[name] = nn.Parameter(p.detach().to(compute), requires_grad=False)
        module._lightning_dpo_stored = stored

    return hook


def _restore_parameters(module: nn.Module, args: Any, output: Any) -> Any:
    for name, p in getattr(module, "_lightning_dpo_stored", {}).items():
        module._parameters[name] = p
    module._lightning_dpo_stored = {}
    return output
