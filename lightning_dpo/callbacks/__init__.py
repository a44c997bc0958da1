"""Callbacks: reward-margin distributions, Hugging Face export and generation samples."""

from lightning_dpo.callbacks.export import HFExportCallback
from lightning_dpo.callbacks.margins import RewardMarginCallback
from lightning_dpo.callbacks.samples import GenerationSamples

__all__ = ["GenerationSamples", "HFExportCallback", "RewardMarginCallback"]
