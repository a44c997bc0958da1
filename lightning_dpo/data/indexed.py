"""Pairs that carry a stable ``pair_index``, unique across the data module's splits.

Train pairs are numbered 0..N_train-1 and validation pairs N_train..N_train+N_val-1, so anything keyed by
pair (the ``precomputed`` reference log-probs) is looked up by identity, never by batch position: shuffling,
length grouping and DDP sharding cannot misalign it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

import datasets
import numpy as np
from torch.utils.data import Dataset

from lightning_dpo.data.arrow import column_table

ID_COLUMNS = ["prompt_input_ids", "chosen_input_ids", "rejected_input_ids"]


class IndexedPairs(Dataset):
    """A tokenized split whose items are ``{prompt_input_ids, chosen_input_ids, rejected_input_ids,
    pair_index}``; ``pair_index = offset + row``."""

    def __init__(self, data: datasets.Dataset, offset: int = 0) -> None:
        self.data = data.select_columns(ID_COLUMNS)
        self.offset = offset

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**self.data[i], "pair_index": self.offset + i}

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """Batched fetch (the DataLoader's fast path): one Arrow read for the whole batch."""
        columns = self.data[list(indices)]
        return [
            {**{name: columns[name][k] for name in ID_COLUMNS}, "pair_index": self.offset + i}
            for k, i in enumerate(indices)
        ]


def rank_share(n: int, rank: int, world_size: int) -> list[int]:
    """This rank's indices of ``n`` rows: every ``world_size``-th from ``rank``, a short share topped up with
    its first rows (their values are simply computed twice), so every rank gets ``ceil(n / world_size)`` and
    sharded models, whose forward passes are collective, stay in step."""
    share = list(range(rank, n, world_size))
    per_rank = -(-n // world_size)
    return (share + (share or [0]) * per_rank)[:per_rank]


def tokens_fingerprint(*splits: datasets.Dataset) -> str:
    """sha256 of every pair's token ids, split by split, in row order: it changes with the data and with
    every setting that changes tokens (tokenizer, template, truncation, lengths)."""
    digest = hashlib.sha256()
    for data in splits:
        digest.update(f"split:{len(data)}".encode())
        if not len(data):
            continue
        for name in ID_COLUMNS:
            column = column_table(data, name).column(name).combine_chunks()
            lengths = np.diff(column.offsets.to_numpy()).astype(np.int64)
            values = column.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
            digest.update(lengths.tobytes())
            digest.update(values.tobytes())
    return digest.hexdigest()
