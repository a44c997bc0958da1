"""Sharding the policy and the reference through Lightning's own strategies; no parallelism of our own.

- **FSDP2** (``ModelParallelStrategy``): ``DPOModule.configure_model`` calls :func:`fully_shard_model` on the
  reference and on the policy separately, over ``self.device_mesh["data_parallel"]``.
- **FSDP1** (``FSDPStrategy``): :class:`DPOAutoWrapPolicy` makes every transformer block and each whole causal
  LM (policy, reference) an FSDP unit of its own, so that no FlatParameter mixes trainable and frozen weights.
- **DeepSpeed ZeRO 2/3** (``DeepSpeedStrategy``): :func:`check_deepspeed_strategy` refuses settings that would
  put the frozen reference into checkpoints; :func:`hf_deepspeed_zero3` lets ``from_pretrained`` load
  partitioned weights under ZeRO-3.
- **Export**: :func:`full_policy_state_dict` gathers the full policy on rank 0 under any of them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, nn


def is_causal_lm(module: nn.Module) -> bool:
    """A whole Hugging Face causal LM (``*ForCausalLM``: the generation head's class), not a part of one."""
    from transformers import GenerationMixin

    return isinstance(module, GenerationMixin)


def is_transformer_block(module: nn.Module, class_names: tuple[str, ...] = ()) -> bool:
    """A decoder layer: a ``transformers`` ``GradientCheckpointingLayer`` or a class named in ``class_names``."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    return isinstance(module, GradientCheckpointingLayer) or type(module).__name__ in class_names


def transformer_blocks(model: nn.Module, class_names: tuple[str, ...] = ()) -> list[nn.Module]:
    """The model's decoder layers, outermost first; a block inside a block is not listed twice.

    ``class_names`` adds classes (e.g. ``("LlamaDecoderLayer",)``) to the ``transformers`` layers found by type;
    the model's own ``_no_split_modules`` are always included.
    """
    names = tuple(class_names) + tuple(getattr(model, "_no_split_modules", None) or ())
    blocks: list[nn.Module] = []
    for module in model.modules():
        if module is not model and is_transformer_block(module, names):
            if not any(_contains(block, module) for block in blocks):
                blocks.append(module)
    return blocks


def _contains(outer: nn.Module, inner: nn.Module) -> bool:
    return any(m is inner for m in outer.modules())


def fully_shard_model(
    model: nn.Module,
    mesh: Any,
    *,
    reshard_after_forward: bool = True,
    mp_policy: Any | None = None,
    block_class_names: tuple[str, ...] = (),
) -> nn.Module:
    """FSDP2: each transformer block is one unit, then the rest of the model (embeddings, final norm, LM head)
    is the root unit. Returns ``model`` (sharded in place).

    Args:
        model: A causal LM (the policy, or a frozen reference: freeze it and set eval mode *before* sharding).
        mesh: The data-parallel ``DeviceMesh`` (``DPOModule.device_mesh["data_parallel"]``).
        reshard_after_forward: Free the gathered weights after each block's forward (ZeRO-3-like). ``False``
            keeps them until backward (ZeRO-2-like: more memory, fewer all-gathers).
        mp_policy: A ``torch.distributed.fsdp.MixedPrecisionPolicy``, or ``None`` for the module's own dtypes.
        block_class_names: Extra decoder-layer class names, for models whose layers ``transformers`` does not mark.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    kwargs = {"mesh": mesh, "mp_policy": mp_policy or MixedPrecisionPolicy()}
    blocks = transformer_blocks(model, block_class_names)
    for i, block in enumerate(blocks):
        # The last block's weights are needed again at once by backward: keeping them saves one all-gather.
        fully_shard(block, reshard_after_forward=reshard_after_forward and i < len(blocks) - 1, **kwargs)
    fully_shard(model, reshard_after_forward=reshard_after_forward, **kwargs)
    return model


class DPOAutoWrapPolicy:
    """FSDP1 auto-wrap policy (``FSDPStrategy(auto_wrap_policy=DPOAutoWrapPolicy())``): every transformer block,
    and every whole causal LM, is an FSDP unit of its own.

    The policy and the frozen reference are separate causal LMs, so they land in separate units: no
    FlatParameter holds both trainable and frozen weights, and the reference's units never need gradients.
    (A LoRA policy mixes them inside each layer by nature; FSDPStrategy's default ``use_orig_params=True``
    allows that.) The ``DPOModule`` root unit is left with no parameters.

    Args:
        block_class_names: Extra decoder-layer class names, for models whose layers ``transformers`` does not mark.
    """

    def __init__(self, block_class_names: list[str] | None = None) -> None:
        self.block_class_names = tuple(block_class_names or ())

    def __call__(self, module: nn.Module, recurse: bool, nonwrapped_numel: int) -> bool:
        if recurse:
            return True  # always look inside: the units are found by type, not by size
        return is_causal_lm(module) or is_transformer_block(module, self.block_class_names)


# -- DeepSpeed ---------------------------------------------------------------------------------------


def check_deepspeed_strategy(strategy: Any) -> None:
    """Refuse DeepSpeed settings that would train or save the frozen reference.

    DeepSpeed's optimizer is built from the module's optimizer (the policy's trainable parameters only).
    Its checkpoints are another matter: without ``exclude_frozen_parameters`` every rank's checkpoint
    carries the whole frozen reference, which ``configure_model`` rebuilds anyway.
    """
    if not getattr(strategy, "exclude_frozen_parameters", True):
        raise ValueError(
            "DeepSpeedStrategy(exclude_frozen_parameters=False) writes the frozen reference into every checkpoint; "
            "set trainer.strategy.init_args.exclude_frozen_parameters: true (configs/deepspeed-zero2.yaml)"
        )
    config = getattr(strategy, "config", None) or {}
    stage = config.get("zero_optimization", {}).get("stage", 0)
    if stage not in (2, 3):
        raise ValueError(f"lightning_dpo's DeepSpeed configs use ZeRO stage 2 or 3; this config has stage {stage}")


def zero3_enabled(strategy: Any) -> bool:
    """Whether the strategy is DeepSpeed with ZeRO stage 3 (parameters partitioned across ranks)."""
    config = getattr(strategy, "config", None)
    return (
        bool(config)
        and type(strategy).__name__ == "DeepSpeedStrategy"
        and config.get("zero_optimization", {}).get("stage") == 3
    )


@contextlib.contextmanager
def hf_deepspeed_zero3(strategy: Any) -> Iterator[None]:
    """Inside the block, ``from_pretrained`` knows ZeRO-3 is on: it builds the model partitioned and loads each
    weight into its partitions (``transformers``' ``HfDeepSpeedConfig``). Without it, weights loaded into a model
    that Lightning's ``deepspeed.zero.Init`` already partitioned would be lost. No-op for other strategies."""
    if not zero3_enabled(strategy):
        yield
        return
    from transformers.integrations import HfDeepSpeedConfig

    keep_alive = HfDeepSpeedConfig(strategy.config)  # transformers holds it through a weak reference
    try:
        yield
    finally:
        del keep_alive


def is_partitioned(model: nn.Module) -> bool:
    """Whether DeepSpeed ZeRO-3 partitioned the model's parameters (a deep copy of it would copy nothing)."""
    return any(hasattr(p, "ds_id") for p in model.parameters())


# -- gathering for export ----------------------------------------------------------------------------


def full_policy_state_dict(policy: nn.Module, root: nn.Module | None = None) -> dict[str, Tensor] | None:
    """The policy's full, unsharded state dict, on CPU, on global rank 0; ``{}`` on other ranks.

    A collective under sharded strategies: every rank must call it. ``None`` when the policy is not sharded
    (single device, DDP, ZeRO-2): each rank then holds the full weights and ``policy.state_dict()`` is it.

    Args:
        policy: ``DPOModule.policy``: sharded with FSDP2 (DTensor parameters), partitioned by ZeRO-3, or an
            FSDP1 unit (``FullyShardedDataParallel``).
        root: The strategy's wrapped model (``trainer.strategy.model``); FSDP1 gathers from the root unit.
    """
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP1

    if isinstance(policy, FSDP1) or (root is not None and any(isinstance(m, FSDP1) for m in root.modules())):
        return _gather_fsdp1(policy, root)
    if any(_is_dtensor(p) for p in policy.parameters()):
        return _gather_dtensor(policy)
    if is_partitioned(policy):
        return _gather_zero3(policy)
    return None


def _is_dtensor(t: Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(t, DTensor)


def _is_rank_zero() -> bool:
    return not torch.distributed.is_initialized() or torch.distributed.get_rank() == 0


def _gather_dtensor(policy: nn.Module) -> dict[str, Tensor]:
    """FSDP2: all-gather every DTensor; rank 0 keeps a CPU copy (``cpu_offload`` leaves other ranks empty)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    return get_model_state_dict(policy, options=options)


def _gather_fsdp1(policy: nn.Module, root: nn.Module | None) -> dict[str, Tensor]:
    """FSDP1: the root unit's full state dict, gathered to rank 0 on CPU, keys under ``policy.`` kept."""
    from torch.distributed.fsdp import FullStateDictConfig, StateDictType
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP1

    model = root if root is not None else policy
    config = FullStateDictConfig(offload_to_cpu=True, rank0_only=True)
    with FSDP1.state_dict_type(model, StateDictType.FULL_STATE_DICT, config):
        state = model.state_dict()
    if model is policy:
        return state
    prefix = "policy."
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _gather_zero3(policy: nn.Module) -> dict[str, Tensor]:
    """ZeRO-3: gather one parameter at a time (never the whole model at once); rank 0 keeps a CPU copy."""
    import deepspeed

    rank0 = _is_rank_zero()
    state: dict[str, Tensor] = {}
    for key, tensor in policy.state_dict(keep_vars=True).items():
        with deepspeed.zero.GatheredParameters([tensor] if hasattr(tensor, "ds_id") else [], modifier_rank=None):
            if rank0:
                state[key] = tensor.detach().to("cpu", copy=True)
    return state
