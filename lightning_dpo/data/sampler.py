"""The training order of preference pairs: seeded, sharded across ranks, resumable, optionally length-grouped.

``PairSampler`` is a ``DistributedSampler`` (so Lightning does not inject another one) that yields this
rank's pair indices for one epoch; the DataLoader cuts them into batches of ``batch_size``.

- Plain (``group_by_length=False``): the order of ``DistributedSampler(shuffle=True, seed=seed)``, a
  ``randperm`` seeded with ``seed + epoch``, every rank taking every R-th index.
- Grouped: the same permutation is cut into megabatches of ``megabatch_steps`` global steps
  (``batch_size × world_size`` pairs a step); each megabatch is sorted by length and cut into steps, the
  steps are shuffled (the longest first, so an out-of-memory shows at once), and rank r takes the r-th
  ``batch_size`` slice of every step. So each batch holds pairs of similar length and every rank's batch
  at a step is alike in length too.

Both pad the permutation by wrapping to a multiple of the world size, as ``DistributedSampler`` does, so
every rank gets the same number of batches; ranks' shares are otherwise disjoint.

Resuming mid-epoch: ``state_dict()`` is the epoch and the number of indices yielded; after
``load_state_dict`` the next iteration continues the same epoch's order from there. torchdata's
``StatefulDataLoader`` saves it in Lightning checkpoints.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DistributedSampler


class PairSampler(DistributedSampler):
    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        *,
        group_by_length: bool = False,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        megabatch_steps: int = 50,
    ) -> None:
        self.lengths = np.asarray(lengths, dtype=np.int64)
        super().__init__(
            range(len(self.lengths)), num_replicas=num_replicas or 1, rank=rank or 0, shuffle=True, seed=seed
        )
        self.batch_size, self.group_by_length, self.megabatch_steps = batch_size, group_by_length, megabatch_steps
        self._yielded = 0
        self._resume_at = 0

    def order(self, epoch: int | None = None) -> list[int]:
        """This rank's pair indices for ``epoch`` (default: the current one)."""
        epoch = self.epoch if epoch is None else epoch
        if self.group_by_length:
            return grouped_order(
                self.lengths, self.batch_size, self.num_replicas, self.rank, self.seed + epoch, self.megabatch_steps
            )
        return shuffled_order(len(self.lengths), self.num_replicas, self.rank, self.seed + epoch)

    def __iter__(self) -> Iterator[int]:
        # A generator: the order is computed at the first next(), after Lightning's set_epoch.
        order = self.order()
        start, self._resume_at = self._resume_at, 0
        self._yielded = start
        for index in order[start:]:
            self._yielded += 1
            yield index

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "yielded": self._yielded,
            "seed": self.seed,
            "num_replicas": self.num_replicas,
            "group_by_length": self.group_by_length,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("seed", "num_replicas", "group_by_length"):
            if state[key] != getattr(self, key):
                raise ValueError(
                    f"cannot resume the training order mid-epoch: the checkpoint has {key}={state[key]!r}, "
                    f"this run {getattr(self, key)!r}"
                )
        self.epoch, self._resume_at = state["epoch"], state["yielded"]


def shuffled_order(n: int, num_replicas: int, rank: int, seed: int) -> list[int]:
    """``DistributedSampler(shuffle=True)``'s order: a seeded permutation, wrapped, every R-th index."""
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    total = math.ceil(n / num_replicas) * num_replicas
    perm += (perm * math.ceil(total / max(n, 1)))[: total - n]
    return perm[rank:total:num_replicas]


def grouped_order(
    lengths: np.ndarray, batch_size: int, num_replicas: int, rank: int, seed: int, megabatch_steps: int = 50
) -> list[int]:
    """This rank's length-grouped order (module docstring)."""
    n = len(lengths)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
    total = math.ceil(n / num_replicas) * num_replicas
    perm = np.resize(perm, total)  # wraps, as DistributedSampler pads
    step = batch_size * num_replicas
    mega = step * megabatch_steps
    steps = []
    for start in range(0, total, mega):
        chunk = perm[start : start + mega]
        chunk = chunk[np.argsort(-lengths[chunk], kind="stable")]  # (≤ mega,) longest first
        steps += [chunk[i : i + step] for i in range(0, len(chunk), step)]
    full = [s for s in steps if len(s) == step]
    short = [s for s in steps if len(s) < step]  # at most one: the end of the last megabatch
    rng = np.random.default_rng(seed)
    full = [full[i] for i in rng.permutation(len(full))]
    if full:
        longest = int(np.argmax([lengths[s].max() for s in full]))
        full.insert(0, full.pop(longest))
    order = []
    for s in full + short:
        share = len(s) // num_replicas  # batch_size, or less on the one short step
        order += s[rank * share : (rank + 1) * share].tolist()
    return order


def padding_fraction(
    chosen_rows: np.ndarray,
    rejected_rows: np.ndarray,
    order: Sequence[int],
    batch_size: int,
    pad_to_multiple_of: int | None = None,
) -> float:
    """Share of padding in the batches that ``order`` cuts into: each batch is padded to its longest row.

    ``chosen_rows``/``rejected_rows``: (N,) tokens of prompt + completion of each pair's two rows.
    """
    real = padded = 0
    order = np.asarray(order, dtype=np.int64)
    for start in range(0, len(order), batch_size):
        batch = order[start : start + batch_size]
        width = int(max(chosen_rows[batch].max(), rejected_rows[batch].max()))
        if pad_to_multiple_of:
            width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
        real += int(chosen_rows[batch].sum() + rejected_rows[batch].sum())
        padded += 2 * len(batch) * width
    return 1 - real / padded if padded else 0.0
