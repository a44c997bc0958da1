"""``PreferenceDataModule``: preference data from sources to concatenated, padded batches.

prepare_data (once per node)   read -> validate -> tokenise (datasets.map, num_proc) -> disk cache
setup (every rank)             load the cache -> carve validation -> mixture weights -> data_report
train_dataloader               StatefulDataLoader + PairSampler (seeded, sharded, resumable)
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import asdict, dataclass
from typing import Any

import datasets
import numpy as np
from torch.utils.data import ConcatDataset, DataLoader, Dataset, Subset
from torchdata.stateful_dataloader import StatefulDataLoader
from transformers import PreTrainedTokenizerBase

from lightning_dpo.data import cache
from lightning_dpo.data.arrow import column
from lightning_dpo.data.collate import PreferenceCollator
from lightning_dpo.data.formats import check_columns
from lightning_dpo.data.indexed import IndexedPairs, rank_share, tokens_fingerprint
from lightning_dpo.data.lint import lint_split
from lightning_dpo.data.pipeline import SplitSource, build_split, first_bad_record
from lightning_dpo.data.report import flatten_report, marked_example, skipped_warning, split_report
from lightning_dpo.data.sampler import PairSampler
from lightning_dpo.data.sources import (
    MAX_RECORD_CHARS,
    DataSource,
    as_sources,
    describe_dataset,
    fingerprint,
    read_splits,
    sources_as_hparams,
)
from lightning_dpo.data.splits import carve_indices, find_validation
from lightning_dpo.data.templates import resolve_chat_template
from lightning_dpo.data.truncation import TokenSettings, TruncationMode
from lightning_dpo.embedded import DEFAULT_DATASET
from lightning_dpo.errors import UserError
from lightning_dpo.models import load_tokenizer, source_max_positions
from lightning_dpo.namespace import pl, submodule
from lightning_dpo.storage import default_cache_dir

_utilities = submodule("utilities")


@dataclass
class SplitPlan:
    """One split to materialise: its sources and the cache key of their tokens."""

    sources: list[SplitSource]
    key: str
    parts: dict[str, Any]


class PreferenceDataModule(pl.LightningDataModule):
    """Reads (prompt, chosen, rejected) preference data, tokenises it and batches it for ``DPOModule``.

    Args:
        dataset: A Hugging Face dataset id, a local ``.json``/``.jsonl``/``.parquet``/``.csv`` file, a glob, a
            directory (files grouped into splits by name: ``train.jsonl``, ``val.jsonl``, ...), or
            ``embedded:<name>``. Or a list of sources to mix, each ``{path, config, split, weight, columns}``.
            The default is the bundled polite-vs-rude data set.
        dataset_config: The configuration name of a Hub dataset, if it has several.
        train_split: The split to train on.
        val_split: The split to validate on. ``None``: a ``validation``/``val``/``valid``/``dev``/``test``
            split when the source has one, else ``val_size`` pairs carved out of the train split.
        val_dataset: A separate source (or list of sources) for validation: its ``val_split``, or its only split.
        val_size: Pairs carved out of train for validation when no split is given: a fraction (< 1) or a count.
        tokenizer_name_or_path: The tokenizer. ``None``: the model's (``model.model_name_or_path``).
        max_length: Maximum tokens of prompt + completion. A pair that fits is never cut; one that does not is
            cut as ``truncation_mode`` says.
        max_prompt_length: With ``truncation_mode=keep_end``, the prompt tokens a pair that does not fit keeps
            before its completions are cut: a long prompt first loses tokens from its start (after BOS), only as
            many as the pair needs, down to this floor; then the completion's end goes. ``None``: half of
            ``max_length``.
        batch_size: Preference pairs per device per step (each pair is two sequences).
        val_batch_size: Pairs per device per validation step. ``None``: ``batch_size``.
        num_workers: DataLoader worker processes.
        pin_memory: Page-locked batches, so that the copy to a GPU can overlap compute. ``None``: when the
            trainer's device is a CUDA GPU.
        pad_to_multiple_of: Round each batch's padded length up to a multiple of this.
        seed: Seed of the validation carve-out, the mixture's subsampling and the training order.
        columns: Your column names by role, when they differ: ``{prompt: question, chosen: good, rejected: bad}``.
        system_prompt: Put in front of every prompt: a system message in conversations (unless one is there),
            the text itself in front of text prompts.
        chat_template: A Jinja chat template (or a file with one) for conversational records, instead of the
            tokenizer's own. It is also saved with the exported tokenizer.
        truncation_mode: ``keep_end``: a pair longer than ``max_length`` cuts its prompt's start (down to
            ``max_prompt_length``), then its completion's end. ``keep_start`` (TRL's default): prompt +
            completion loses its end past ``max_length`` (a prompt that fills it leaves the pair unusable).
        strict: Stop at the first bad record (invalid JSON, missing/None or non-string field, both completions
            empty, chosen identical to rejected, exact duplicate, ...) with an error naming source, record and
            field; and at a record with one empty completion, which is otherwise kept (an EOS-only completion:
            saying nothing can be the preferred answer) and counted in the data report. ``False``: skip bad
            records, count them by reason and warn.
        group_by_length: Batch training pairs of similar length together (seeded, shuffled batches) to cut
            padding. ``False``: plain seeded shuffling.
        cache_dir: Where tokenised splits are cached, keyed by the data and every setting that changes tokens.
            ``None``: ``$LIGHTNING_DPO_CACHE``, else ``~/.cache/lightning_dpo``.
        num_proc: Processes that tokenise. ``None``: one per 10,000 records, up to the CPU count.
        max_record_chars: A record larger than this (its JSON line in bytes, or the characters of its texts) is
            skipped and counted as ``too_large`` (or stops a ``strict`` run) instead of being tokenised whole:
            one 50 MB record took 3 minutes and 16 GB to tokenise. ``None``: no limit.
    """

    def __init__(
        self,
        dataset: str | list[DataSource] = DEFAULT_DATASET,
        dataset_config: str | None = None,
        train_split: str = "train",
        val_split: str | None = None,
        val_dataset: str | list[DataSource] | None = None,
        val_size: float = 0.05,
        tokenizer_name_or_path: str | None = None,
        max_length: int = 512,
        max_prompt_length: int | None = None,
        batch_size: int = 8,
        val_batch_size: int | None = None,
        num_workers: int = 0,
        pin_memory: bool | None = None,
        pad_to_multiple_of: int | None = None,
        seed: int = 42,
        columns: dict[str, str] | None = None,
        system_prompt: str | None = None,
        chat_template: str | None = None,
        truncation_mode: TruncationMode = "keep_end",
        strict: bool = False,
        group_by_length: bool = False,
        cache_dir: str | None = None,
        num_proc: int | None = None,
        max_record_chars: int | None = MAX_RECORD_CHARS,
    ) -> None:
        super().__init__()
        TokenSettings(max_length, max_prompt_length, truncation_mode)  # refuses bad lengths before any work
        check_columns(columns)
        for source in as_sources(dataset) + (as_sources(val_dataset) if val_dataset is not None else []):
            check_columns(source.columns)
        # Checkpoints keep only primitives (they load with weights_only=True): sources as plain dicts.
        self.save_hyperparameters(ignore=["dataset", "val_dataset"])
        self.hparams["dataset"] = sources_as_hparams(dataset)
        self.hparams["val_dataset"] = sources_as_hparams(val_dataset)
        self.tokenizer: PreTrainedTokenizerBase | None = None
        self.train_data: datasets.Dataset | None = None
        self.val_data: datasets.Dataset | None = None
        self.data_report: dict[str, dict[str, Any]] = {}
        """Per split: records read, kept and dropped by reason, lengths, truncation, padding (see report.py)."""
        self._plans: dict[str, SplitPlan] | None = None
        self._settings: TokenSettings | None = None
        self._memory: dict[str, tuple[datasets.Dataset, dict[str, Any]]] = {}

    # -- preparing and loading -----------------------------------------------------------------------

    def prepare_data(self) -> None:
        """Tokenise every split not yet in the cache (Lightning runs this once per node)."""
        for plan in self._resolve().values():
            self._materialise(plan, write=True)

    def setup(self, stage: str | None = None) -> None:
        if self.train_data is None:  # idempotent: fit then test re-enters setup
            self._setup(write=True)
        if stage == "fit":
            self._log_report()

    def _log_report(self) -> None:
        """Log what was read, kept, dropped (by reason) and truncated with the run, so that nothing is dropped
        silently: ``data/train/dropped/<kind>``, ``data/train/lengths/prompt/p90``, ... at step 0."""
        trainer = self.trainer
        if trainer is None or not trainer.is_global_zero:
            return
        for logger in trainer.loggers:
            logger.log_metrics(flatten_report(self.data_report), step=0)

    def dry_run(self) -> dict[str, dict[str, Any]]:
        """Build the splits as ``setup`` does, reading the cache but writing nothing; return ``data_report``."""
        self._setup(write=False, warn=False)
        return self.data_report

    def example(self) -> str:
        """The first training pair decoded, with prompt and completion boundaries marked."""
        return marked_example(self.tokenizer, self.train_data[0])

    def _setup(self, write: bool, warn: bool = True) -> None:
        hp = self.hparams
        plans = self._resolve()
        train, train_tally = self._materialise(plans["train"], write)
        _require_pairs("train", hp.dataset, train, train_tally)
        bos, eos = self.tokenizer.bos_token_id, self.tokenizer.eos_token_id
        lints = {"train": lint_split(train, bos, eos)}  # the whole split, before carving and weights
        linted = len(train)
        if "val" in plans:
            val, val_tally = self._materialise(plans["val"], write)
            _require_pairs("val", hp.val_dataset or hp.dataset, val, val_tally)
            lints["val"] = lint_split(val, bos, eos)
        else:
            train, val = _carve(train, hp.val_size, hp.seed)
            val_tally = {"carved_from_train": True}
        train_tally = {**train_tally, **({"carved_to_val": len(val)} if "val" not in plans else {})}
        train = _apply_weights(train, plans["train"].sources, hp.seed)
        _require_pairs("train", hp.dataset, train, {"read": len(train)})  # weights of 0 everywhere
        self.train_data, self.val_data = train, val
        self.data_report = {
            "train": split_report(train_tally, train, hp.batch_size, hp.seed, hp.pad_to_multiple_of),
            "val": split_report(val_tally, val, hp.val_batch_size or hp.batch_size, hp.seed, hp.pad_to_multiple_of),
        }
        for split, found in lints.items():
            self.data_report[split]["lint"] = found
            self.data_report[split]["lint_pairs"] = linted if split == "train" else len(val)
        for split, report in self.data_report.items():
            message = skipped_warning(split, report) if warn else None
            if message:
                _utilities.rank_zero_warn(message)
            _utilities.rank_zero_info(
                f"{split}: {report['pairs']} pairs ({report['truncated']} truncated to max_length={hp.max_length})"
            )

    def _resolve(self) -> dict[str, SplitPlan]:
        """Load the tokenizer, find each split's sources and the cache key of their tokens (once)."""
        if self._plans is not None:
            return self._plans
        hp = self.hparams
        self.tokenizer = load_tokenizer(self._tokenizer_source())
        template = resolve_chat_template(hp.chat_template)
        if template is not None:
            self.tokenizer.chat_template = template  # so that an exported tokenizer carries it
        max_length, max_prompt_length = self._fit_to_model(hp.max_length, hp.max_prompt_length)
        settings = TokenSettings(max_length, max_prompt_length, hp.truncation_mode, template)
        common = {
            "tokenizer": cache.tokenizer_fingerprint(self.tokenizer),
            "settings": asdict(settings),
            "system_prompt": hp.system_prompt,
            "max_record_chars": hp.max_record_chars,
        }
        self._settings = settings
        plans = {}
        for split, sources in zip(("train", "val"), self._split_sources()):
            if sources is not None:
                data = [[s.name, fingerprint(s.rows), s.columns] for s in sources]
                parts = {**common, "data": data}
                plans[split] = SplitPlan(sources, cache.cache_key(parts), parts)
        self._plans = plans
        return plans

    def _materialise(self, plan: SplitPlan, write: bool) -> tuple[datasets.Dataset, dict[str, Any]]:
        """The split's tokens and tally: from memory, from the disk cache, or built now (and cached)."""
        hp = self.hparams
        cache_dir = hp.cache_dir or default_cache_dir()
        found = self._memory.get(plan.key) or cache.load(cache_dir, plan.key, discard_corrupt=write)
        if found is None:
            # Another process building the same key (a second run on this cache) holds the lock: wait, then
            # load its entry instead of tokenising again.
            with cache.lock(cache_dir, plan.key) if write else contextlib.nullcontext():
                found = cache.load(cache_dir, plan.key, discard_corrupt=write) if write else None
                if found is None:
                    data, tally = build_split(
                        plan.sources,
                        self.tokenizer,
                        self._settings,
                        system_prompt=hp.system_prompt,
                        strict=hp.strict,
                        num_proc=hp.num_proc,
                        fingerprint=plan.key,
                        desc=f"tokenizing {plan.sources[0].name}",
                    )
                    found = (data, tally)
                    if write and len(data) and cache.save(cache_dir, plan.key, data, tally, plan.parts):
                        found = cache.load(cache_dir, plan.key) or found  # memory-mapped, as other ranks see it
        if hp.strict and (error := first_bad_record(found[1])) is not None:
            raise error  # the cache was made without strict and skipped this record
        self._memory[plan.key] = found
        return found

    def _fit_to_model(self, max_length: int, max_prompt_length: int | None) -> tuple[int, int | None]:
        """``max_length`` cut to the attached model's positions (``max_position_embeddings``), with a warning: a
        longer sequence would fail deep in the model (an index error for learned positions) or silently
        extrapolate (rotary ones). ``max_prompt_length`` comes down with it when it would no longer fit."""
        source = self._model_source()
        limit = source_max_positions(source) if source is not None else None
        if limit is None or max_length <= limit:
            return max_length, max_prompt_length
        if max_prompt_length is not None and max_prompt_length >= limit:
            max_prompt_length = limit // 2
        _utilities.rank_zero_warn(
            f"data.max_length={max_length} is longer than the {limit} positions of the model {source!r} "
            f"(its config's max_position_embeddings): pairs are cut to {limit} tokens"
            + (f", prompts to {max_prompt_length}" if max_prompt_length != self.hparams.max_prompt_length else "")
        )
        return limit, max_prompt_length

    def _model_source(self) -> str | None:
        module = self.trainer.lightning_module if self.trainer is not None else None
        return getattr(module, "hparams", {}).get("model_name_or_path")

    def longest_pair(self) -> int:
        """Tokens in the longest sequence of any batch (prompt + the longer completion), over both splits."""
        return max(int(column(data, "length").max()) for data in (self.train_data, self.val_data) if len(data))

    def _tokenizer_source(self) -> str:
        return tokenizer_source(
            self,
            "PreferenceDataModule needs a tokenizer: set tokenizer_name_or_path, or attach it to a Trainer "
            "with a DPOModule so that the model's own tokenizer is used",
        )

    def _split_sources(self) -> tuple[list[SplitSource], list[SplitSource] | None]:
        """The train sources, and the validation sources (None: carve validation out of train)."""
        hp = self.hparams
        train, val = [], []
        for spec in as_sources(hp.dataset):
            splits = read_splits(spec.path, spec.config or hp.dataset_config, hp.max_record_chars)
            name = spec.split or hp.train_split
            train.append(_split_source(spec, name, _pick(splits, name, spec.path), hp.columns))
            if hp.val_dataset is None:
                found = hp.val_split if hp.val_split is not None else find_validation(splits)
                if found is not None:
                    val.append(_split_source(spec, found, _pick(splits, found, spec.path), hp.columns, weight=1.0))
        for spec in as_sources(hp.val_dataset) if hp.val_dataset is not None else []:
            splits = read_splits(spec.path, spec.config or hp.dataset_config, hp.max_record_chars)
            name = spec.split or hp.val_split
            if name is None:
                name = next(iter(splits)) if len(splits) == 1 else find_validation(splits)
            if name is None:
                raise ValueError(f"val_dataset {spec.path!r} has splits {sorted(splits)}: set val_split")
            val.append(_split_source(spec, name, _pick(splits, name, spec.path), hp.columns, weight=1.0))
        return train, (val or None)

    # -- loaders -------------------------------------------------------------------------------------

    def _collator(self) -> PreferenceCollator:
        return PreferenceCollator(self.tokenizer.pad_token_id, self.hparams.pad_to_multiple_of)

    def train_dataloader(self) -> StatefulDataLoader:
        """Seeded, sharded (one disjoint share per rank) and resumable: the loader's position is saved in
        Lightning checkpoints. Batches are length-grouped with ``group_by_length``."""
        hp = self.hparams
        distributed = (getattr(self.trainer, "distributed_sampler_kwargs", None) if self.trainer else None) or {}
        sampler = PairSampler(
            column(self.train_data, "length"),
            hp.batch_size,
            group_by_length=hp.group_by_length,
            seed=hp.seed,
            num_replicas=distributed.get("num_replicas"),
            rank=distributed.get("rank"),
        )
        padding = self.data_report.get("train", {}).get("padding")
        if padding:
            _utilities.rank_zero_info(
                f"train batches: {padding['shuffled']:.1%} padding shuffled, {padding['grouped_by_length']:.1%} "
                f"grouped by length (data.group_by_length={hp.group_by_length})"
            )
        with warnings.catch_warnings():  # torchdata 0.11 calls a torch API that torch >= 2.9 deprecates
            warnings.filterwarnings("ignore", message="'set_vital' is deprecated")
            return StatefulDataLoader(
                IndexedPairs(self.train_data),
                batch_size=hp.batch_size,
                sampler=sampler,
                collate_fn=self._collator(),
                num_workers=hp.num_workers,
                persistent_workers=hp.num_workers > 0,
                pin_memory=self._pin_memory(),
            )

    def _loader(self, data: Dataset, batch_size: int) -> DataLoader:
        return DataLoader(
            data,
            batch_size=batch_size,
            shuffle=False,
            collate_fn=self._collator(),
            num_workers=self.hparams.num_workers,
            persistent_workers=self.hparams.num_workers > 0,
            pin_memory=self._pin_memory(),
        )

    def _pin_memory(self) -> bool:
        if self.hparams.pin_memory is not None:
            return self.hparams.pin_memory
        return self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"

    def val_dataloader(self) -> DataLoader:
        return self._loader(
            IndexedPairs(self.val_data, offset=len(self.train_data)),
            self.hparams.val_batch_size or self.hparams.batch_size,
        )

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    # -- pairs by identity (for per-pair caches such as precomputed reference log-probs) ---------------

    def num_pairs(self) -> int:
        """Train + validation pairs; ``pair_index`` runs over ``range(num_pairs())``."""
        return len(self.train_data) + len(self.val_data)

    def pairs_fingerprint(self) -> str:
        """A hash of every pair's tokens, train then validation (see ``tokens_fingerprint``)."""
        return tokens_fingerprint(self.train_data, self.val_data)

    def pair_locations(self, pair_indices: list[int]) -> list[str]:
        """Where each pair came from (``data/train.jsonl:12``, ``org/set[train] row 7``), by ``pair_index``:
        what errors about a batch (a non-finite loss) name."""
        n_train, found = len(self.train_data), []
        for i in pair_indices:
            split, row = (self.train_data, i) if i < n_train else (self.val_data, i - n_train)
            found.append(split[row]["location"] if 0 <= row < len(split) else f"pair_index {i}")
        return found

    def pair_batches(self, batch_size: int, rank: int = 0, world_size: int = 1) -> DataLoader:
        """Batches of this rank's share of all pairs, in order (:func:`~lightning_dpo.data.indexed.rank_share`:
        every rank gets the same number, so sharded models stay in step)."""
        everything = ConcatDataset([IndexedPairs(self.train_data), IndexedPairs(self.val_data, len(self.train_data))])
        return self._loader(Subset(everything, rank_share(len(everything), rank, world_size)), batch_size)


class NoUsablePairs(UserError, ValueError):
    """A split with no pair left to train or validate on; the message says what was dropped and why."""


def _require_pairs(split: str, dataset: Any, data: datasets.Dataset, tally: dict[str, Any]) -> None:
    if len(data) == 0:
        why = skipped_warning(split, tally) or f"{split}: {tally.get('read', 0)} records"
        raise NoUsablePairs(f"the {split} split of {describe_dataset(dataset)} has no usable pairs. {why}")


def _split_source(
    spec: DataSource, split: str, rows: Any, columns: dict[str, str] | None, weight: float | None = None
) -> SplitSource:
    weight = spec.weight if weight is None else weight
    return SplitSource(f"{spec.path}[{split}]", rows, weight, spec.columns or columns)


def _pick(splits: dict[str, Any], name: str, source: str) -> Any:
    if name not in splits:
        raise ValueError(f"dataset {source!r} has no split {name!r}; it has {sorted(splits)}")
    return splits[name]


def _carve(data: datasets.Dataset, val_size: float, seed: int) -> tuple[datasets.Dataset, datasets.Dataset]:
    train, val = carve_indices(len(data), val_size, seed, unit="pairs")
    return data.select(train), data.select(val)


def _apply_weights(data: datasets.Dataset, sources: list[SplitSource], seed: int) -> datasets.Dataset:
    """Each source's pairs ``weight`` times: whole repeats, then a seeded subset for the fraction."""
    if all(s.weight == 1 for s in sources):
        return data
    origin = column(data, "source")
    picked = []
    for i, source in enumerate(sources):
        rows = np.flatnonzero(origin == i)
        whole, fraction = int(source.weight), source.weight - int(source.weight)
        picked += [rows] * whole
        extra = round(fraction * len(rows))
        if extra:
            picked.append(np.random.default_rng([seed, i]).choice(rows, extra, replace=False))
    return data.select(np.sort(np.concatenate(picked)) if picked else [])


def tokenizer_source(data: pl.LightningDataModule, missing: str) -> str:
    """The data module's ``tokenizer_name_or_path``, else its Trainer's module's ``model_name_or_path`` (the
    model's own tokenizer); ``missing`` is the error when there is neither."""
    if data.hparams.tokenizer_name_or_path is not None:
        return data.hparams.tokenizer_name_or_path
    module = data.trainer.lightning_module if data.trainer is not None else None
    source = getattr(module, "hparams", {}).get("model_name_or_path")
    if source is None:
        raise ValueError(missing)
    return source
