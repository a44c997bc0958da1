"""lightning_dpo: Direct Preference Optimization (Rafailov et al. 2023) as a PyTorch Lightning plugin."""

from lightning_dpo.callbacks import (
    AtomicCheckpointIO,
    GenerationSamples,
    HFExportCallback,
    HubSettings,
    PreemptionCheckpoint,
    RewardMarginCallback,
    ThroughputCallback,
)
from lightning_dpo.data import PreferenceDataModule, RankingDataModule, UnpairedDataModule
from lightning_dpo.data.prompt_datamodule import PromptDataModule
from lightning_dpo.logps import LogpsOptions
from lightning_dpo.losses import (
    LOSSES,
    LossSettings,
    PreferenceLossOutput,
    preference_loss,
    ranking_loss,
    register_loss,
    unpaired_loss,
)
from lightning_dpo.module import DPOModule
from lightning_dpo.nonfinite import NonFiniteError, NonFiniteSettings
from lightning_dpo.onpolicy.online import OnlineDPOModule
from lightning_dpo.reference import REFERENCES, ReferenceSettings, register_reference

__version__ = "0.2.0"

__all__ = [
    "OnlineDPOModule",
    "PromptDataModule",
    "AtomicCheckpointIO",
    "LOSSES",
    "REFERENCES",
    "DPOModule",
    "GenerationSamples",
    "HFExportCallback",
    "HubSettings",
    "LogpsOptions",
    "LossSettings",
    "NonFiniteError",
    "NonFiniteSettings",
    "PreemptionCheckpoint",
    "PreferenceDataModule",
    "PreferenceLossOutput",
    "RankingDataModule",
    "ReferenceSettings",
    "RewardMarginCallback",
    "ThroughputCallback",
    "UnpairedDataModule",
    "preference_loss",
    "ranking_loss",
    "register_loss",
    "register_reference",
    "unpaired_loss",
]
