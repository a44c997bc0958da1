"""Callbacks: reward-margin distributions, Hugging Face export (model card, Hub upload), generation samples."""

from lightning_dpo.callbacks.export import HFExportCallback
from lightning_dpo.callbacks.margins import RewardMarginCallback
from lightning_dpo.callbacks.model_card import HubSettings
from lightning_dpo.callbacks.samples import GenerationSamples

__all__ = ["GenerationSamples", "HFExportCallback", "HubSettings", "RewardMarginCallback"]
