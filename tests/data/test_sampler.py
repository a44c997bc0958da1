"""The training order: seeded, one disjoint share per rank, resumable mid-epoch, optionally length-grouped."""

from collections import Counter

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils.data import DistributedSampler

from lightning_dpo import PreferenceDataModule
from lightning_dpo.data.sampler import PairSampler, padding_fraction
from lightning_dpo.namespace import pl


def ranks(lengths, batch_size, replicas, group, seed=0, epoch=0):
    samplers = [
        PairSampler(lengths, batch_size, group_by_length=group, seed=seed, num_replicas=replicas, rank=r)
        for r in range(replicas)
    ]
    for s in samplers:
        s.set_epoch(epoch)
    return [list(s) for s in samplers]


@pytest.mark.parametrize("replicas", [1, 3])
def test_plain_order_is_distributed_sampler_shuffling(replicas):
    for rank in range(replicas):
        reference = DistributedSampler(range(37), num_replicas=replicas, rank=rank, shuffle=True, seed=5)
        reference.set_epoch(2)
        sampler = PairSampler([1] * 37, 4, seed=5, num_replicas=replicas, rank=rank)
        sampler.set_epoch(2)
        assert list(sampler) == list(reference)


@settings(max_examples=40, deadline=None)
@given(
    lengths=st.lists(st.integers(1, 500), min_size=1, max_size=120),
    batch_size=st.integers(1, 9),
    replicas=st.integers(1, 4),
    group=st.booleans(),
    epoch=st.integers(0, 3),
)
def test_every_rank_gets_a_disjoint_equal_share(lengths, batch_size, replicas, group, epoch):
    orders = ranks(lengths, batch_size, replicas, group, epoch=epoch)
    n, per_rank = len(lengths), -(-len(lengths) // replicas)
    assert all(len(o) == per_rank for o in orders)  # the same number of batches on every rank
    counts = Counter(i for o in orders for i in o)
    assert set(counts) == set(range(n))  # every pair is seen
    assert sum(counts.values()) - n == per_rank * replicas - n  # repeats only to even out the ranks
    assert orders == ranks(lengths, batch_size, replicas, group, epoch=epoch)  # deterministic


def test_grouping_cuts_padding_and_ranks_step_together():
    rng = np.random.default_rng(0)
    lengths = rng.integers(10, 400, size=1000)
    shuffled, grouped = ranks(lengths, 8, 1, False)[0], ranks(lengths, 8, 1, True)[0]
    rows = lengths.astype(np.int64)
    assert padding_fraction(rows, rows, grouped, 8) < padding_fraction(rows, rows, shuffled, 8) / 4
    # The first step holds the longest pair (an out-of-memory shows at once).
    assert lengths[grouped[:8]].max() == lengths.max()
    # Under DDP, the two ranks' batches at each step come from one sorted step: similar lengths.
    a, b = ranks(lengths, 8, 2, True)
    widths = [(lengths[a[i : i + 8]].max(), lengths[b[i : i + 8]].max()) for i in range(0, len(a), 8)]
    assert np.mean([abs(x - y) for x, y in widths]) < 20
    assert ranks(lengths, 8, 1, True, epoch=1)[0] != grouped  # a new order each epoch


@pytest.mark.parametrize("group", [False, True])
def test_resume_mid_epoch_from_state(group):
    lengths = list(range(50, 0, -1))
    sampler = PairSampler(lengths, 4, group_by_length=group, seed=3)
    sampler.set_epoch(2)
    it = iter(sampler)
    head = [next(it) for _ in range(13)]
    state = sampler.state_dict()
    assert state["epoch"] == 2 and state["yielded"] == 13
    resumed = PairSampler(lengths, 4, group_by_length=group, seed=3)
    resumed.load_state_dict(state)
    assert head + list(resumed) == sampler.order(2)
    assert list(resumed) == resumed.order(2)  # the epoch after the resumed one starts from its beginning
    with pytest.raises(ValueError, match="seed"):
        PairSampler(lengths, 4, group_by_length=group, seed=4).load_state_dict(state)


class _Recorder(pl.LightningModule):
    """Records the batches it trains on."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.seen: list[list[int]] = []

    def training_step(self, batch, batch_idx):
        self.seen.append(batch["input_ids"].sum(1).tolist())
        return self.weight * batch["completion_mask"].sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.0)


def _fit(root, data_args, max_steps, ckpt_path=None, every=None):
    callbacks = [pl.callbacks.ModelCheckpoint(dirpath=root, every_n_train_steps=every, save_top_k=-1)] if every else []
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=max_steps,
        limit_val_batches=0,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=bool(every),
        callbacks=callbacks,
        default_root_dir=root,
    )
    model = _Recorder()
    trainer.fit(model, PreferenceDataModule(**data_args), ckpt_path=ckpt_path, weights_only=True if ckpt_path else None)
    return model.seen


@pytest.mark.filterwarnings("ignore:.*(validation_step|callbacks used to create the checkpoint|LeafSpec)")
@pytest.mark.parametrize("group", [False, True])
def test_a_lightning_checkpoint_resumes_the_data_order_mid_epoch(tmp_path, tiny_data_dir, tiny_model_dir, group):
    data_args = dict(
        dataset=str(tiny_data_dir), tokenizer_name_or_path=str(tiny_model_dir), batch_size=4, group_by_length=group
    )  # 48 pairs: 12 batches an epoch
    whole = _fit(tmp_path / "whole", data_args, max_steps=18)
    _fit(tmp_path / "cut", data_args, max_steps=15, every=5)
    for step in (5, 15):  # mid-epoch 0, and mid-epoch 1
        (checkpoint,) = (tmp_path / "cut").glob(f"*step={step}.ckpt")
        assert _fit(tmp_path / f"resumed{step}", data_args, max_steps=18, ckpt_path=checkpoint) == whole[step:]
