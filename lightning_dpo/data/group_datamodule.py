"""Data modules for rankings (``RankingDataModule``) and unpaired feedback (``UnpairedDataModule``).

They read the same sources as ``PreferenceDataModule`` (files, directories, globs, Hub ids,
``embedded:<name>``), parse and tokenise them with :mod:`~lightning_dpo.data.groups`, and batch them with the
rankings / unpaired collators, one group of rows per prompt. Tokens are kept in memory (no disk cache yet:
they suit data sets of up to some 10⁵ records). Every record left out is counted by reason in
``data_report`` and warned about; ``strict`` stops at the first. Both provide what reference mode
``precomputed`` reads (``num_pairs``, ``pairs_fingerprint``, ``pair_batches``), one table row per prompt.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from transformers import PreTrainedTokenizerBase

from lightning_dpo.data.collate import RankingCollator, UnpairedCollator
from lightning_dpo.data.groups import (
    GroupTally,
    assign_kl_completions,
    read_examples,
    to_ranking,
    to_unpaired,
    tokenize_rankings,
    tokenize_unpaired,
)
from lightning_dpo.data.indexed import rank_share
from lightning_dpo.data.sources import read_splits
from lightning_dpo.data.splits import carve_indices, find_validation
from lightning_dpo.data.truncation import TokenSettings, TruncationMode
from lightning_dpo.embedded import DEFAULT_DATASET
from lightning_dpo.models import load_tokenizer
from lightning_dpo.namespace import pl, submodule

_utilities = submodule("utilities")

DEFAULT_RANKINGS = "embedded:polite-rankings"
"""The bundled rankings: four graded answers per question of the polite task (``scripts/make_polite_rankings.py``)."""


class _Items(Dataset):
    def __init__(self, items: Sequence[dict[str, Any]], offset: int = 0) -> None:
        self.items, self.offset = items, offset

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**self.items[i], "pair_index": self.offset + i}


class _GroupDataModule(pl.LightningDataModule):
    """What the two data modules share: sources, splits, validation carve-out, loaders, the PairSource API."""

    collator: type

    def __init__(
        self,
        dataset: str,
        dataset_config: str | None = None,
        train_split: str = "train",
        val_split: str | None = None,
        val_size: float = 0.05,
        tokenizer_name_or_path: str | None = None,
        max_length: int = 512,
        max_prompt_length: int | None = None,
        truncation_mode: TruncationMode = "keep_end",
        batch_size: int = 8,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 42,
        columns: dict[str, str] | None = None,
        strict: bool = False,
    ) -> None:
        super().__init__()
        self._token_settings = TokenSettings(max_length, max_prompt_length, truncation_mode)
        self.save_hyperparameters()
        self.tokenizer: PreTrainedTokenizerBase | None = None
        self.train_data: list[dict[str, Any]] | None = None
        self.val_data: list[dict[str, Any]] | None = None
        self.data_report: dict[str, dict[str, Any]] = {}

    # -- to be provided per kind ------------------------------------------------------------------------

    def _parse(self, row: Any, location: str) -> Any:
        raise NotImplementedError

    def _tokenize(self, examples: list, tally: GroupTally, split: str) -> list[dict[str, Any]]:
        raise NotImplementedError

    # -- building ---------------------------------------------------------------------------------------

    def setup(self, stage: str | None = None) -> None:
        if self.train_data is not None:
            return
        hp = self.hparams
        self.tokenizer = load_tokenizer(self._tokenizer_source())
        splits = read_splits(hp.dataset, hp.dataset_config)
        if hp.train_split not in splits:
            raise ValueError(f"dataset {hp.dataset!r} has no split {hp.train_split!r}; it has {sorted(splits)}")
        val_name = hp.val_split or find_validation(splits)
        if val_name is not None and val_name not in splits:
            raise ValueError(f"dataset {hp.dataset!r} has no split {val_name!r}; it has {sorted(splits)}")
        train = self._build("train", splits[hp.train_split])
        val = self._build("val", splits[val_name]) if val_name is not None else None
        if val is None:
            train, val = self._carve(train)
            self.data_report["val"] = {"carved_from_train": len(val)}
        self.train_data, self.val_data = train, val
        for split, data in (("train", train), ("val", val)):
            _utilities.rank_zero_info(
                f"{split}: {len(data)} {self._unit} ({sum(i['truncated'] for i in data)} truncated)"
            )

    _unit = "records"

    def _carve(self, items: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Validation carved out of train by record, so the items one record gave (a pair made unpaired)
        stay on one side."""
        records = list(dict.fromkeys(i["location"] for i in items))
        _, carved = carve_indices(len(records), self.hparams.val_size, self.hparams.seed, unit="records")
        to_val = {records[r] for r in carved}
        return [i for i in items if i["location"] not in to_val], [i for i in items if i["location"] in to_val]

    def _build(self, split: str, rows) -> list[dict[str, Any]]:
        tally = GroupTally()
        examples = read_examples(rows, self._parse, tally, strict=self.hparams.strict)
        items = self._tokenize(examples, tally, split)
        if self.hparams.strict and tally.dropped:
            first = tally.first[0]
            raise ValueError(f"bad record at {first['location']} ({first['kind']}): {first['message']}")
        self.data_report[split] = tally.to_dict(len(items))
        if message := tally.warning(split):
            _utilities.rank_zero_warn(message)
        if not items:
            raise ValueError(f"the {split} split of {self.hparams.dataset!r} has no usable records. {message or ''}")
        return items

    def _tokenizer_source(self) -> str:
        if self.hparams.tokenizer_name_or_path is not None:
            return self.hparams.tokenizer_name_or_path
        module = self.trainer.lightning_module if self.trainer is not None else None
        source = getattr(module, "hparams", {}).get("model_name_or_path")
        if source is None:
            raise ValueError(
                f"{type(self).__name__} needs a tokenizer: set tokenizer_name_or_path, or attach it to a Trainer"
            )
        return source

    # -- loaders ----------------------------------------------------------------------------------------

    def _collate(self):
        return self.collator(self.tokenizer.pad_token_id)

    def train_dataloader(self) -> DataLoader:
        """Seeded shuffling; Lightning shards it under DDP (its distributed sampler)."""
        generator = torch.Generator().manual_seed(self.hparams.seed)
        return DataLoader(
            _Items(self.train_data),
            batch_size=self.hparams.batch_size,
            shuffle=True,
            generator=generator,
            collate_fn=self._collate(),
            num_workers=self.hparams.num_workers,
        )

    def _loader(self, data: Dataset, batch_size: int) -> DataLoader:
        return DataLoader(data, batch_size=batch_size, collate_fn=self._collate(), num_workers=self.hparams.num_workers)

    def val_dataloader(self) -> DataLoader:
        return self._loader(
            _Items(self.val_data, offset=len(self.train_data)), self.hparams.val_batch_size or self.hparams.batch_size
        )

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    # -- PairSource (reference mode precomputed) -------------------------------------------------------

    def num_pairs(self) -> int:
        return len(self.train_data) + len(self.val_data)

    def pairs_fingerprint(self) -> str:
        digest = hashlib.sha256(type(self).__name__.encode())
        for split in (self.train_data, self.val_data):
            digest.update(f"split:{len(split)}".encode())
            for item in split:
                digest.update(json.dumps({k: v for k, v in item.items() if k != "location"}, sort_keys=True).encode())
        return digest.hexdigest()

    def pair_batches(self, batch_size: int, rank: int = 0, world_size: int = 1) -> DataLoader:
        everything = _Items(self.train_data + self.val_data)
        return self._loader(
            torch.utils.data.Subset(everything, rank_share(len(everything), rank, world_size)), batch_size
        )


class RankingDataModule(_GroupDataModule):
    """Rankings of K completions per prompt, for ``model.loss.type: plackett_luce`` (formats and ties:
    :mod:`lightning_dpo.data.groups`).

    Args:
        dataset: A source as ``PreferenceDataModule`` reads it, holding ``{prompt, completions, scores}``,
            ``{prompt, completions, ranks}`` or UltraFeedback-shaped records. Default: the bundled rankings.
        num_completions: K. ``None``: the first record's count; records with another count are skipped
            (``completion_count``).
        columns: Your field names by role (``prompt``, ``completions``, ``scores``, ``ranks``).
        batch_size: Prompts per device per step (each is K sequences).

    The other arguments are ``PreferenceDataModule``'s.
    """

    collator = RankingCollator
    _unit = "rankings"

    def __init__(self, dataset: str = DEFAULT_RANKINGS, num_completions: int | None = None, **kwargs: Any) -> None:
        super().__init__(dataset, **kwargs)
        self.save_hyperparameters()

    def _parse(self, row: Any, location: str) -> Any:
        return to_ranking(row, location, self.hparams.columns)

    def _tokenize(self, examples: list, tally: GroupTally, split: str) -> list[dict[str, Any]]:
        return tokenize_rankings(examples, self.tokenizer, self._token_settings, tally, self.hparams.num_completions)


class UnpairedDataModule(_GroupDataModule):
    """Unpaired feedback, ``{prompt, completion, label}`` (TRL's unpaired format), for ``model.loss.type: kto``.

    Args:
        dataset: A source as ``PreferenceDataModule`` reads it. Default: the bundled polite pairs, unpaired.
        unpair: Read a pair (prompt/chosen/rejected) as one desirable and one undesirable example. ``False``:
            pairs are skipped (``paired_record``).
        columns: Your field names by role (``prompt``, ``completion``, ``label``; ``chosen``/``rejected`` for pairs).
        batch_size: Examples per device per step (each is two sequences: its own completion and the KL one).
            TRL needs more than one for the KL estimate; so does this.

    The other arguments are ``PreferenceDataModule``'s; ``seed`` also fixes the KL completions. A validation
    set carved out of train (``val_size``) is counted in records: a pair made unpaired stays on one side, and
    each side takes its KL completions from itself.
    """

    collator = UnpairedCollator
    _unit = "examples"

    def __init__(self, dataset: str = DEFAULT_DATASET, unpair: bool = True, **kwargs: Any) -> None:
        super().__init__(dataset, **kwargs)
        self.save_hyperparameters()
        if self.hparams.batch_size < 2:
            raise ValueError("UnpairedDataModule: batch_size must be at least 2 for the KL estimate (as in TRL)")

    def _parse(self, row: Any, location: str) -> Any:
        return to_unpaired(row, location, self.hparams.columns, unpair=self.hparams.unpair)

    def _tokenize(self, examples: list, tally: GroupTally, split: str) -> list[dict[str, Any]]:
        items = tokenize_unpaired(examples, self.tokenizer, self._token_settings, tally, seed=self._kl_seed(split))
        self._report_labels(split, items)
        return items

    def _carve(self, items: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """As for every group data module (by record); then each side takes its KL completions from itself
        again, so no validation example lends its completion to a training one."""
        train, val = super()._carve(items)
        for split, part in (("train", train), ("val", val)):
            assign_kl_completions(part, self._token_settings.max_length, self._kl_seed(split))
            self._report_labels(split, part)
        return train, val

    def _kl_seed(self, split: str) -> int:
        return self.hparams.seed + (0 if split == "train" else 1)

    def _report_labels(self, split: str, items: list[dict[str, Any]]) -> None:
        desirable = sum(i["label"] for i in items)
        labels = {"desirable": desirable, "undesirable": len(items) - desirable}
        self.data_report.setdefault("labels", {})[split] = labels
