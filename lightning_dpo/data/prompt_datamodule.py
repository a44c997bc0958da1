"""``PromptDataModule``: prompts for on-policy training (online DPO), batched, sharded and resumable.

setup (every rank)     read -> validate -> deduplicate -> tokenise as the preference pipeline does
                       (:mod:`lightning_dpo.data.prompts`) -> carve validation -> data_report
train_dataloader       StatefulDataLoader + PairSampler (seeded, one disjoint share per rank, resumable)

A batch is a dict of lists, not of padded tensors: the module left-pads prompts for generation itself.

    prompt_input_ids   list of B token-id lists   BOS, chat template, max_prompt_length as in training
    prompt_index       (B,) long                  each prompt's stable index in its split
    prompt_text        list of B strings          what rewards and judges see
    location           list of B strings          where each prompt came from, for messages
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from torchdata.stateful_dataloader import StatefulDataLoader
from transformers import PreTrainedTokenizerBase

from lightning_dpo.data.datamodule import tokenizer_source
from lightning_dpo.data.formats import check_columns
from lightning_dpo.data.prompts import Prompt, PromptSet, build_prompts, carve, dropped_summary, read_prompt_rows
from lightning_dpo.data.sampler import PairSampler
from lightning_dpo.data.sources import DataSource, as_sources, read_splits, sources_as_hparams
from lightning_dpo.data.splits import find_validation
from lightning_dpo.data.templates import resolve_chat_template
from lightning_dpo.embedded import DEFAULT_DATASET
from lightning_dpo.models import load_tokenizer
from lightning_dpo.namespace import pl, submodule

_utilities = submodule("utilities")


class PromptItems(Dataset):
    """Prompts as loader items."""

    def __init__(self, prompts: Sequence[Prompt]) -> None:
        self.prompts = list(prompts)

    def __len__(self) -> int:
        return len(self.prompts)

    def __getitem__(self, i: int) -> Prompt:
        return self.prompts[i]


def collate_prompts(prompts: Sequence[Prompt]) -> dict[str, Any]:
    """Prompts -> the batch layout of the module docstring."""
    return {
        "prompt_input_ids": [list(p.ids) for p in prompts],
        "prompt_index": torch.tensor([p.index for p in prompts], dtype=torch.long),
        "prompt_text": [p.text for p in prompts],
        "location": [p.location for p in prompts],
    }


class PromptDataModule(pl.LightningDataModule):
    """Reads prompts (prompt-only records, or the prompts of preference records) for on-policy training.

    Args:
        dataset: Anything ``PreferenceDataModule`` reads (a Hub id, a file, a glob, a directory,
            ``embedded:<name>``, or a list of sources with weight 1). Records with a ``prompt`` (a string or a
            list of messages) give it; full preference records give their prompt as DPO finds it.
        dataset_config: The configuration name of a Hub dataset, if it has several.
        train_split: The split to train on.
        val_split: The split to validate on. ``None``: a ``validation``/``val``/``valid``/``dev``/``test``
            split when the source has one, else ``val_size`` prompts carved out of train.
        val_dataset: A separate source for validation prompts: its ``val_split``, or its only split.
        val_size: Prompts carved out of train when no validation split exists: a fraction (< 1) or a count;
            ``0``: no validation.
        num_prompts: Use only the first N usable training prompts (``None``: all).
        num_val_prompts: Use only the first N validation prompts (``None``: all).
        tokenizer_name_or_path: The tokenizer. ``None``: the model's (``model.model_name_or_path``).
        max_prompt_length: Prompts keep their last ``max_prompt_length`` tokens (and BOS), as in training.
        batch_size: Prompts per device per step (each gives ``model.samples_per_prompt`` samples).
        val_batch_size: Prompts per device per validation step. ``None``: ``batch_size``.
        num_workers: DataLoader worker processes.
        seed: Seed of the training order and of the validation carve-out.
        columns: Your column names by role, e.g. ``{prompt: question}``.
        system_prompt: Put in front of every prompt (a system message in conversations), as in training.
        chat_template: A Jinja chat template (or a file holding one) for conversational prompts.
        strict: Stop at the first bad record instead of skipping and counting it.
    """

    def __init__(
        self,
        dataset: str | list[DataSource] = DEFAULT_DATASET,
        dataset_config: str | None = None,
        train_split: str = "train",
        val_split: str | None = None,
        val_dataset: str | list[DataSource] | None = None,
        val_size: float = 0.05,
        num_prompts: int | None = None,
        num_val_prompts: int | None = None,
        tokenizer_name_or_path: str | None = None,
        max_prompt_length: int | None = 256,
        batch_size: int = 8,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        seed: int = 42,
        columns: dict[str, str] | None = None,
        system_prompt: str | None = None,
        chat_template: str | None = None,
        strict: bool = False,
    ) -> None:
        super().__init__()
        check_columns(columns)
        self.save_hyperparameters(ignore=["dataset", "val_dataset"])
        self.hparams["dataset"] = sources_as_hparams(dataset)
        self.hparams["val_dataset"] = sources_as_hparams(val_dataset)
        self.tokenizer: PreTrainedTokenizerBase | None = None
        self.train_prompts: PromptSet | None = None
        self.val_prompts: PromptSet | None = None
        self.data_report: dict[str, dict[str, Any]] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.train_prompts is not None:
            return
        hp = self.hparams
        self.tokenizer = load_tokenizer(self._tokenizer_source())
        template = resolve_chat_template(hp.chat_template)
        if template is not None:
            self.tokenizer.chat_template = template
        train = self._read(hp.dataset, hp.train_split, hp.num_prompts, template)
        val_source, val_split = self._validation_source()
        if val_source is not None:
            val = self._read(val_source, val_split, hp.num_val_prompts, template)
        elif hp.val_size:
            kept, carved = carve(train.prompts, hp.val_size, hp.seed)
            carved = carved[: hp.num_val_prompts] if hp.num_val_prompts is not None else carved
            train = PromptSet(_renumber(kept), {**train.tally, "carved_to_val": len(carved)})
            val = PromptSet(_renumber(carved), {"carved_from_train": True, "kept": len(carved)})
        else:
            val = PromptSet([], {"kept": 0})
        if not len(train):
            raise ValueError(f"no usable training prompts in {hp.dataset!r}. {dropped_summary(train.tally) or ''}")
        self.train_prompts, self.val_prompts = train, val
        self.data_report = {"train": train.tally, "val": val.tally}
        for split, tally in self.data_report.items():
            message = dropped_summary(tally)
            if message:
                _utilities.rank_zero_warn(f"{split}: {message}")
            truncated = tally.get("truncated", 0)
            _utilities.rank_zero_info(
                f"{split}: {tally.get('kept', 0)} prompts ({truncated} truncated to max_prompt_length="
                f"{hp.max_prompt_length})"
            )

    def _read(self, dataset: Any, split: str, limit: int | None, template: str | None) -> PromptSet:
        hp = self.hparams
        rows = [row for _, source_rows in read_prompt_rows(dataset, split, hp.dataset_config) for row in source_rows]
        return build_prompts(
            rows,
            self.tokenizer,
            max_prompt_length=hp.max_prompt_length,
            chat_template=template,
            system_prompt=hp.system_prompt,
            columns=hp.columns,
            strict=hp.strict,
            limit=limit,
        )

    def _validation_source(self) -> tuple[Any, str | None]:
        """(source, split) of the validation prompts, or (None, None) to carve them out of train."""
        hp = self.hparams
        if hp.val_dataset is not None:
            if hp.val_split is not None:
                return hp.val_dataset, hp.val_split
            splits = read_splits(as_sources(hp.val_dataset)[0].path, hp.dataset_config)
            name = next(iter(splits)) if len(splits) == 1 else find_validation(splits)
            if name is None:
                raise ValueError(f"val_dataset {hp.val_dataset!r} has splits {sorted(splits)}: set val_split")
            return hp.val_dataset, name
        if hp.val_split is not None:
            return hp.dataset, hp.val_split
        splits = read_splits(as_sources(hp.dataset)[0].path, hp.dataset_config)
        name = find_validation(splits)
        return (hp.dataset, name) if name is not None else (None, None)

    def _tokenizer_source(self) -> str:
        return tokenizer_source(
            self,
            "PromptDataModule needs a tokenizer: set tokenizer_name_or_path, or attach it to a Trainer with a "
            "module that has model_name_or_path (OnlineDPOModule)",
        )

    # -- loaders -------------------------------------------------------------------------------------

    def train_dataloader(self) -> StatefulDataLoader:
        """Seeded, sharded (one disjoint share per rank, equal in size) and resumable."""
        hp = self.hparams
        distributed = (getattr(self.trainer, "distributed_sampler_kwargs", None) if self.trainer else None) or {}
        sampler = PairSampler(
            [len(p.ids) for p in self.train_prompts.prompts],
            hp.batch_size,
            seed=hp.seed,
            num_replicas=distributed.get("num_replicas"),
            rank=distributed.get("rank"),
        )
        with warnings.catch_warnings():  # torchdata 0.11 calls a torch API that torch >= 2.9 deprecates
            warnings.filterwarnings("ignore", message="'set_vital' is deprecated")
            return StatefulDataLoader(
                PromptItems(self.train_prompts.prompts),
                batch_size=hp.batch_size,
                sampler=sampler,
                collate_fn=collate_prompts,
                num_workers=hp.num_workers,
                persistent_workers=hp.num_workers > 0,
            )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(
            PromptItems(self.val_prompts.prompts if self.val_prompts is not None else []),
            batch_size=self.hparams.val_batch_size or self.hparams.batch_size,
            shuffle=False,
            collate_fn=collate_prompts,
            num_workers=self.hparams.num_workers,
        )

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()


def _renumber(prompts: Sequence[Prompt]) -> list[Prompt]:
    return [p._replace(index=i) for i, p in enumerate(prompts)]
