"""Callbacks: reward-margin distributions, Hugging Face export (model card, Hub upload), generation samples,
throughput (tokens/s, FLOPs/s, MFU)."""

from lightning_dpo.callbacks.export import HFExportCallback
from lightning_dpo.callbacks.margins import RewardMarginCallback
from lightning_dpo.callbacks.model_card import HubSettings
from lightning_dpo.callbacks.samples import GenerationSamples
from lightning_dpo.callbacks.throughput import ThroughputCallback

__all__ = ["GenerationSamples", "HFExportCallback", "HubSettings", "RewardMarginCallback", "ThroughputCallback"]
