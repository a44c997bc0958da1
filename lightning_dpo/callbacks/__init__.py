"""Callbacks: reward-margin distributions and Hugging Face export."""

from lightning_dpo.callbacks.export import HFExportCallback
from lightning_dpo.callbacks.rewards import RewardMarginCallback

__all__ = ["HFExportCallback", "RewardMarginCallback"]
