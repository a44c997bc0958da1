"""``PreferenceDataModule``: preference data from a source to concatenated, padded batches."""

from __future__ import annotations

import random
import warnings
from typing import Any, Iterable

import datasets
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_info
from torch.utils.data import DataLoader
from transformers import PreTrainedTokenizerBase

from lightning_dpo.data.collate import PreferenceCollator
from lightning_dpo.data.formats import PreferenceExample, to_example
from lightning_dpo.data.sources import VALIDATION_SPLIT_NAMES, Row, read_splits
from lightning_dpo.data.tokenize import tokenize_example
from lightning_dpo.embedded import DEFAULT_DATASET
from lightning_dpo.models import load_tokenizer


class PreferenceDataModule(pl.LightningDataModule):
    """Reads (prompt, chosen, rejected) preference data, tokenises it and batches it for ``DPOModule``.

    Args:
        dataset: A Hugging Face dataset id, a local ``.json``/``.jsonl``/``.parquet``/``.csv`` file, a glob,
            a directory (files grouped into splits by name: ``train.jsonl``, ``val.jsonl``, ...), or
            ``embedded:<name>``. The default is the bundled polite-vs-rude data set.
        dataset_config: The configuration name of a Hub dataset, if it has several.
        train_split: The split to train on.
        val_split: The split to validate on. ``None``: a ``validation``/``val``/``valid``/``dev``/``test``
            split when the source has one, else ``val_size`` pairs carved out of the train split.
        val_dataset: A separate source for validation (its ``val_split``, or its only split).
        val_size: Pairs carved out of train for validation when no split is given: a fraction (< 1) or a count.
        tokenizer_name_or_path: The tokenizer. ``None``: the model's (``model.model_name_or_path``).
        max_length: Maximum tokens of prompt + completion; longer completions are cut at their end.
        max_prompt_length: Maximum prompt tokens; longer prompts keep their last tokens (and BOS).
        batch_size: Preference pairs per device per step (each pair is two sequences).
        val_batch_size: Pairs per device per validation step. ``None``: ``batch_size``.
        num_workers: DataLoader worker processes.
        pad_to_multiple_of: Round each batch's padded length up to a multiple of this.
        seed: Seed of the validation carve-out and of the training shuffle.
    """

    def __init__(
        self,
        dataset: str = DEFAULT_DATASET,
        dataset_config: str | None = None,
        train_split: str = "train",
        val_split: str | None = None,
        val_dataset: str | None = None,
        val_size: float = 0.05,
        tokenizer_name_or_path: str | None = None,
        max_length: int = 512,
        max_prompt_length: int | None = 256,
        batch_size: int = 8,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        pad_to_multiple_of: int | None = None,
        seed: int = 42,
    ) -> None:
        super().__init__()
        if max_prompt_length is not None and max_prompt_length >= max_length:
            raise ValueError(
                f"max_prompt_length ({max_prompt_length}) must be smaller than max_length ({max_length}) "
                "to leave room for completion tokens"
            )
        self.save_hyperparameters()
        self.tokenizer: PreTrainedTokenizerBase | None = None
        self.train_data: datasets.Dataset | None = None
        self.val_data: datasets.Dataset | None = None

    # -- setup ---------------------------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        if self.train_data is not None:  # idempotent: fit then test re-enters setup
            return
        hp = self.hparams
        self.tokenizer = load_tokenizer(self._tokenizer_source())
        train_rows, val_rows = self._select_rows()
        train = self._prepare(train_rows, "train")
        if val_rows is None:
            train, val = _carve(train, hp.val_size, hp.seed)
        else:
            val = self._prepare(val_rows, "val")
        self.train_data, self.val_data = train, val

    def _tokenizer_source(self) -> str:
        if self.hparams.tokenizer_name_or_path is not None:
            return self.hparams.tokenizer_name_or_path
        module = self.trainer.lightning_module if self.trainer is not None else None
        model_source = getattr(module, "hparams", {}).get("model_name_or_path")
        if model_source is None:
            raise ValueError(
                "PreferenceDataModule needs a tokenizer: set tokenizer_name_or_path, or attach it to a Trainer "
                "with a DPOModule so that the model's own tokenizer is used"
            )
        return model_source

    def _select_rows(self) -> tuple[Iterable[Row], Iterable[Row] | None]:
        hp = self.hparams
        splits = read_splits(hp.dataset, hp.dataset_config)
        train = _pick(splits, hp.train_split, hp.dataset)
        if hp.val_dataset is not None:
            val_splits = read_splits(hp.val_dataset, hp.dataset_config)
            if hp.val_split is not None:
                return train, _pick(val_splits, hp.val_split, hp.val_dataset)
            only = next(iter(val_splits)) if len(val_splits) == 1 else _find_validation(val_splits)
            if only is None:
                raise ValueError(f"val_dataset {hp.val_dataset!r} has splits {sorted(val_splits)}: set val_split")
            return train, val_splits[only]
        if hp.val_split is not None:
            return train, _pick(splits, hp.val_split, hp.dataset)
        found = _find_validation(splits)
        return train, (splits[found] if found is not None else None)

    def _prepare(self, rows: Iterable[Row], split: str) -> datasets.Dataset:
        """Validate every row (raising on the first bad one), tokenise, and drop unusable pairs, loudly."""
        hp = self.hparams
        columns: dict[str, list[str]] = {"location": [], "prompt": [], "chosen": [], "rejected": []}
        for location, row in rows:
            example = to_example(row, location)
            columns["location"].append(location)
            for field in ("prompt", "chosen", "rejected"):
                columns[field].append(getattr(example, field))
        if not columns["location"]:
            raise ValueError(f"the {split} split of {hp.dataset!r} is empty")

        def tokenize(record: dict[str, Any]) -> dict[str, Any]:
            example = PreferenceExample(record["prompt"], record["chosen"], record["rejected"])
            return tokenize_example(example, self.tokenizer, hp.max_length, hp.max_prompt_length)

        data = datasets.Dataset.from_dict(columns).map(tokenize, remove_columns=["prompt", "chosen", "rejected"])
        dropped = [loc for loc, d in zip(data["location"], data["dropped"]) if d]
        if dropped:
            warnings.warn(
                f"{split}: dropped {len(dropped)} of {len(data)} pairs whose prompt leaves no completion token "
                f"within max_length={hp.max_length} (raise max_length or lower max_prompt_length); "
                f"first: {', '.join(dropped[:5])}",
                stacklevel=2,
            )
            data = data.filter(lambda d: not d, input_columns="dropped")
        rank_zero_info(
            f"{split}: {len(data)} pairs from {hp.dataset if split == 'train' else hp.val_dataset or hp.dataset}"
            f" ({sum(data['truncated'])} truncated to max_length={hp.max_length}, {len(dropped)} dropped)"
        )
        return data

    # -- loaders -------------------------------------------------------------------------------------

    def _collator(self) -> PreferenceCollator:
        return PreferenceCollator(self.tokenizer.pad_token_id, self.hparams.pad_to_multiple_of)

    def _loader(self, data: datasets.Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        generator = torch.Generator().manual_seed(self.hparams.seed) if shuffle else None
        return DataLoader(
            data.select_columns(["prompt_input_ids", "chosen_input_ids", "rejected_input_ids"]),
            batch_size=batch_size,
            shuffle=shuffle,
            generator=generator,
            collate_fn=self._collator(),
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_data, self.hparams.batch_size, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_data, self.hparams.val_batch_size or self.hparams.batch_size, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        return self.val_dataloader()


def _pick(splits: dict[str, Iterable[Row]], name: str, source: str) -> Iterable[Row]:
    if name not in splits:
        raise ValueError(f"dataset {source!r} has no split {name!r}; it has {sorted(splits)}")
    return splits[name]


def _find_validation(splits: dict[str, Iterable[Row]]) -> str | None:
    return next((name for name in VALIDATION_SPLIT_NAMES if name in splits), None)


def _carve(data: datasets.Dataset, val_size: float, seed: int) -> tuple[datasets.Dataset, datasets.Dataset]:
    """Split off a validation set with a fixed seed: ``val_size`` is a fraction (< 1) or a count."""
    n_val = round(val_size * len(data)) if val_size < 1 else int(val_size)
    if not 0 < n_val < len(data):
        raise ValueError(f"val_size={val_size} leaves no train or no validation pairs out of {len(data)}")
    order = list(range(len(data)))
    random.Random(seed).shuffle(order)
    return data.select(sorted(order[n_val:])), data.select(sorted(order[:n_val]))
