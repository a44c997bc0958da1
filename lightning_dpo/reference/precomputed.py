"""``precomputed``: reference log-probs computed once, before training, cached on disk, then looked up.

One pass over the train and val pairs computes every pair's reference log-probs; no reference model is
kept for training. The table is cached under a key made from the tokens of every pair (which covers the
data and every tokenisation setting), a hash of the reference weights, and LD-DPO's ``ld_alpha``. A second
run with the same inputs reads the cache without a forward pass; any change gives a new key.

The cache file, ``<cache_dir>/<key>.logps``, is a checksummed header (``storage.write_checked``) and then
the table with its key, saved by ``torch.save`` and read with ``weights_only=True``. It is written
atomically; a truncated, garbled or foreign file is reported and recomputed, never used.

Lookups go by each pair's ``pair_index`` (unique across splits), never by position, so shuffling,
length-grouped sampling and DDP sharding cannot misalign them. Under DDP each rank computes its share of
the pairs, the shares are all-gathered, and rank 0 writes the cache.
"""

from __future__ import annotations

import hashlib
import io
import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

from lightning_dpo import storage
from lightning_dpo.logps import LogpsOptions, SequenceLogps, completion_logps
from lightning_dpo.namespace import submodule
from lightning_dpo.reference.base import Reference, ReferenceSettings, register_reference
from lightning_dpo.storage import default_cache_dir

FILE_KIND = "reference-logps"
"""The header kind of a cached table (``storage.write_checked``)."""


@runtime_checkable
class PairSource(Protocol):
    """What ``precomputed`` needs of the trainer's data module: every pair, by a stable ``pair_index``.
    ``PreferenceDataModule`` provides it."""

    def num_pairs(self) -> int:
        """Pairs over all splits; ``pair_index`` runs over ``range(num_pairs())``."""

    def pairs_fingerprint(self) -> str:
        """A hash of every pair's tokens (it changes with the data and every tokenisation setting)."""

    def pair_batches(self, batch_size: int, rank: int = 0, world_size: int = 1) -> Iterable[dict[str, Tensor]]:
        """Batches (with ``pair_index``) of this rank's share of all pairs; every rank gets as many."""


def weights_fingerprint(model: nn.Module) -> str:
    """sha256 over every parameter and buffer (name, dtype, shape, bytes), in name order."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        if tensor.numel():
            digest.update(tensor.view(torch.uint8).numpy())  # the buffer itself: no copy of the weights
    return digest.hexdigest()


def cache_key(data_fingerprint: str, weights: str, ld_alpha: float | None) -> str:
    return hashlib.sha256(f"{data_fingerprint}|{weights}|ld_alpha={ld_alpha}".encode()).hexdigest()[:32]


@register_reference("precomputed")
class PrecomputedReference(Reference):
    """Reference log-probs from a table filled once before training (see the module docstring).

    Args:
        load_reference: Loads the reference model from its source (the policy's source, or
            ``reference.model_name_or_path``); used when the policy itself can no longer serve (a resumed run).
        separate: Whether the reference is a different model from the policy.
        cache_dir: Where tables are cached.
        batch_size: Pairs per forward pass of the precompute pass.
    """

    loads_separate_model = True

    def __init__(
        self, load_reference: Callable[[], nn.Module], separate: bool, cache_dir: str | None, batch_size: int
    ) -> None:
        super().__init__(sync=False)
        self._load_reference = load_reference
        self._separate = separate
        self.cache_dir = Path(os.path.expanduser(cache_dir or os.path.join(default_cache_dir(), "reference_logps")))
        self.batch_size = batch_size
        self.key: str | None = None
        """The cache key; saved in training checkpoints so that a resumed run finds the same table."""
        self.key_parts: dict[str, Any] = {}
        self.register_buffer("table", torch.empty(0, 2), persistent=False)  # (pairs, [chosen, rejected])

    @classmethod
    def build(
        cls, settings: ReferenceSettings, load: Callable[[str], nn.Module], policy_source: str
    ) -> PrecomputedReference:
        if settings.sync:
            raise ValueError(
                "reference.sync (TR-DPO) changes the reference during training, which precomputed reference "
                "log-probs cannot follow; use reference mode 'frozen' or 'adapter'"
            )
        source = settings.model_name_or_path or policy_source
        separate = settings.model_name_or_path is not None
        return cls(partial(load, source), separate, settings.cache_dir, settings.precompute_batch_size)

    def logps(self, batch: dict[str, Tensor], options: LogpsOptions, ld_alpha: float | None = None) -> SequenceLogps:
        if self.table.numel() == 0:
            raise RuntimeError("reference mode 'precomputed': the table is not filled; fit fills it before training")
        rows = self.table[batch["pair_index"]]  # (B, 2)
        logps = torch.cat([rows[:, 0], rows[:, 1]])  # (2B,) chosen rows first, as in the batch
        zeros = torch.zeros_like(logps)
        return SequenceLogps(logps=logps, num_tokens=zeros, logits_sum=zeros)

    def before_fit(self, trainer: Any, policy: nn.Module, options: LogpsOptions, ld_alpha: float | None) -> None:
        """Fill the table: from the cache when the key matches, else by one pass over the data."""
        datamodule = trainer.datamodule
        if not isinstance(datamodule, PairSource):
            raise TypeError(
                f"reference mode 'precomputed' needs a data module with num_pairs(), pairs_fingerprint() and "
                f"pair_batches() (lightning_dpo.reference.PairSource), such as PreferenceDataModule; got "
                f"{type(datamodule).__name__}"
            )
        data = datamodule.pairs_fingerprint()
        device = trainer.strategy.root_device
        model = None
        if self.key is None or self.key_parts.get("data") != data or self.key_parts.get("ld_alpha") != ld_alpha:
            # A fresh run, or a resumed one whose data changed: hash the reference weights. Before the first
            # step the policy *is* the reference (unless a separate one was named), so nothing is loaded.
            pristine = trainer.global_step == 0 and not self._separate
            model = policy if pristine else self._load_reference().to(device)
            weights = weights_fingerprint(model)
            self.key_parts = {"data": data, "weights": weights, "ld_alpha": ld_alpha}
            self.key = cache_key(data, weights, ld_alpha)
        path = self._path(self.key)
        table = self._read_cache(path, datamodule.num_pairs())
        # Every rank must take the same branch (computing is collective): compute unless all found the table.
        if not trainer.strategy.reduce_boolean_decision(table is not None, all=True):
            model = model if model is not None else self._load_reference().to(device)
            table = self._compute(model, trainer, datamodule, options, ld_alpha)
            if trainer.is_global_zero:
                try:
                    storage.write_checked(path, _table_bytes(self.key, table), FILE_KIND)
                    _info(f"reference log-probs: computed {table.shape[0]} pairs, cached in {path}")
                except OSError as e:
                    _warn(f"could not write the reference log-prob cache {path} ({e}); set model.reference.cache_dir")
            trainer.strategy.barrier()
        else:
            _info(f"reference log-probs: loaded {table.shape[0]} pairs from the cache {path}")
        self.table = table.to(device)

    def state_for_checkpoint(self) -> dict[str, Any]:
        return {"key": self.key, "key_parts": self.key_parts}

    def load_checkpoint_state(self, state: dict[str, Any]) -> None:
        self.key, self.key_parts = state["key"], dict(state["key_parts"])

    def _path(self, key: str) -> Path:
        return self.cache_dir / f"{key}.logps"

    def _read_cache(self, path: Path, num_pairs: int) -> Tensor | None:
        """The cached table, or None when there is none or it is unusable (reported, then recomputed)."""
        try:
            stored = torch.load(
                io.BytesIO(storage.read_checked(path, FILE_KIND)), map_location="cpu", weights_only=True
            )
            table = stored["table"]
            if stored.get("key") != self.key:
                raise storage.CorruptFile(
                    path, f"made for key {stored.get('key')!r}, not {self.key!r} (a foreign file)"
                )
            if table.dtype != torch.float32 or tuple(table.shape) != (num_pairs, 2):
                raise storage.CorruptFile(
                    path, f"a {table.dtype} table of shape {tuple(table.shape)}, expected ({num_pairs}, 2) float32"
                )
            return table
        except FileNotFoundError:
            return None
        except storage.CorruptFile as e:
            problem = e.reason
        except Exception as e:  # passed its checksum yet does not unpickle as a table of tensors
            problem = f"{type(e).__name__}: {e}"
        _warn(f"the reference log-prob cache {path} is unusable ({problem}); recomputing it")
        return None

    @torch.no_grad()
    def _compute(
        self, model: nn.Module, trainer: Any, datamodule: PairSource, options: LogpsOptions, ld_alpha: float | None
    ) -> Tensor:
        rank, world, device = trainer.global_rank, trainer.world_size, trainer.strategy.root_device
        indices, values = [], []
        with _eval_mode(model):
            for batch in datamodule.pair_batches(self.batch_size, rank=rank, world_size=world):
                batch = {k: v.to(device) for k, v in batch.items()}
                logps = completion_logps(model, batch, options=options, ld_alpha=ld_alpha).logps.float()  # (2B,)
                chosen, rejected = logps.chunk(2)
                indices.append(batch["pair_index"])
                values.append(torch.stack([chosen, rejected], dim=1))
        index = torch.cat(indices) if indices else torch.empty(0, dtype=torch.long, device=device)
        value = torch.cat(values) if values else torch.empty(0, 2, device=device)
        index, value = _gather_rows(trainer.strategy, world, index, value)
        table = torch.zeros(datamodule.num_pairs(), 2)
        filled = torch.zeros(datamodule.num_pairs(), dtype=torch.bool)
        table[index.cpu()], filled[index.cpu()] = value.cpu(), True
        if not filled.all():
            raise RuntimeError("reference mode 'precomputed': some pairs got no reference log-probs")
        return table


def _table_bytes(key: str, table: Tensor) -> bytes:
    buffer = io.BytesIO()
    torch.save({"key": key, "table": table.float().contiguous()}, buffer)
    return buffer.getvalue()


def _info(message: str) -> None:
    submodule("utilities").rank_zero_info(message)


def _warn(message: str) -> None:
    submodule("utilities").rank_zero_warn(message)


@contextmanager
def _eval_mode(model: nn.Module) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _gather_rows(strategy: Any, world_size: int, index: Tensor, value: Tensor) -> tuple[Tensor, Tensor]:
    """All-gather (index, value) rows whose counts differ across ranks."""
    if world_size == 1:
        return index, value
    count = torch.tensor([index.numel()], device=index.device)
    counts = strategy.all_gather(count).flatten()
    width = int(counts.max())
    padded_index = torch.zeros(width, dtype=index.dtype, device=index.device)
    padded_value = torch.zeros(width, 2, dtype=value.dtype, device=value.device)
    padded_index[: index.numel()], padded_value[: index.numel()] = index, value
    all_index, all_value = strategy.all_gather(padded_index), strategy.all_gather(padded_value)
    rows = [(i[: int(n)], v[: int(n)]) for i, v, n in zip(all_index, all_value, counts)]
    return torch.cat([r[0] for r in rows]), torch.cat([r[1] for r in rows])
