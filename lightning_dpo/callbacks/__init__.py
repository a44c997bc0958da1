"""Callbacks: reward-margin distributions, Hugging Face export (model card, Hub upload), generation samples,
a checkpoint on preemption, atomic checkpoint writes, throughput (tokens/s, FLOPs/s, MFU)."""

from lightning_dpo.callbacks.checkpoint_io import AtomicCheckpointIO
from lightning_dpo.callbacks.export import HFExportCallback
from lightning_dpo.callbacks.margins import RewardMarginCallback
from lightning_dpo.callbacks.model_card import HubSettings
from lightning_dpo.callbacks.preemption import PreemptionCheckpoint
from lightning_dpo.callbacks.samples import GenerationSamples
from lightning_dpo.callbacks.throughput import ThroughputCallback

__all__ = [
    "AtomicCheckpointIO",
    "GenerationSamples",
    "HFExportCallback",
    "HubSettings",
    "PreemptionCheckpoint",
    "RewardMarginCallback",
    "ThroughputCallback",
]
