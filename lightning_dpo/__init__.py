"""lightning_dpo: Direct Preference Optimization (Rafailov et al. 2023) as a PyTorch Lightning plugin."""

from lightning_dpo.callbacks import GenerationSamples, HFExportCallback, RewardMarginCallback
from lightning_dpo.data import PreferenceDataModule
from lightning_dpo.losses import LOSSES, PreferenceLossOutput, preference_loss, register_loss
from lightning_dpo.module import DPOModule

__version__ = "0.1.0"

__all__ = [
    "LOSSES",
    "DPOModule",
    "GenerationSamples",
    "HFExportCallback",
    "PreferenceDataModule",
    "PreferenceLossOutput",
    "RewardMarginCallback",
    "preference_loss",
    "register_loss",
]
