"""Preference data: sources -> examples -> tokens (cached) -> sampled, concatenated batches."""

from lightning_dpo.data.collate import PreferenceCollator
from lightning_dpo.data.datamodule import PreferenceDataModule
from lightning_dpo.data.formats import ChatExample, PreferenceExample, split_implicit_prompt, to_example
from lightning_dpo.data.group_datamodule import RankingDataModule, UnpairedDataModule
from lightning_dpo.data.report import flatten_report
from lightning_dpo.data.sampler import PairSampler
from lightning_dpo.data.sources import BAD_RECORD_KINDS, DataSource, PreferenceDataError, read_splits
from lightning_dpo.data.tokenize import tokenize_example

__all__ = [
    "BAD_RECORD_KINDS",
    "ChatExample",
    "DataSource",
    "PairSampler",
    "PreferenceCollator",
    "PreferenceDataError",
    "PreferenceDataModule",
    "PreferenceExample",
    "RankingDataModule",
    "UnpairedDataModule",
    "flatten_report",
    "read_splits",
    "split_implicit_prompt",
    "to_example",
    "tokenize_example",
]
