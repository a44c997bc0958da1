"""Pairs by identity (lightning_dpo/data/indexed.py): each rank's share of a table's rows."""

from __future__ import annotations

import pytest

from lightning_dpo.data.indexed import rank_share


@pytest.mark.parametrize("n, world_size", [(10, 3), (9, 3), (2, 4), (1, 1)])
def test_every_rank_gets_the_same_count_and_together_every_row(n, world_size):
    shares = [rank_share(n, rank, world_size) for rank in range(world_size)]
    assert {len(s) for s in shares} == {-(-n // world_size)}
    assert sorted(set().union(*shares)) == list(range(n))
    for rank, share in enumerate(shares):
        own = list(range(rank, n, world_size))
        assert share[: len(own)] == own and set(share) <= set(own or [0])  # tops up with its own first rows


def test_ten_rows_on_three_ranks():
    assert [rank_share(10, r, 3) for r in range(3)] == [[0, 3, 6, 9], [1, 4, 7, 1], [2, 5, 8, 2]]
