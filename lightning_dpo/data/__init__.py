"""Preference data: sources -> examples -> tokens -> concatenated batches."""

from lightning_dpo.data.collate import PreferenceCollator
from lightning_dpo.data.datamodule import PreferenceDataModule
from lightning_dpo.data.formats import PreferenceExample, split_implicit_prompt, to_example
from lightning_dpo.data.sources import PreferenceDataError, read_splits
from lightning_dpo.data.tokenize import tokenize_example

__all__ = [
    "PreferenceCollator",
    "PreferenceDataError",
    "PreferenceDataModule",
    "PreferenceExample",
    "read_splits",
    "split_implicit_prompt",
    "to_example",
    "tokenize_example",
]
