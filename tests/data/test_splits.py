"""The validation carve-out every data module uses (lightning_dpo/data/splits.py)."""

from __future__ import annotations

import pytest

from lightning_dpo.data.splits import carve_indices, find_validation


def test_the_carve_is_seeded_disjoint_and_complete():
    train, val = carve_indices(20, 0.25, seed=7)
    assert len(val) == 5 and sorted(train + val) == list(range(20))
    assert carve_indices(20, 0.25, seed=7) == (train, val)
    assert carve_indices(20, 0.25, seed=8) != (train, val)
    assert train == sorted(train) and val == sorted(val)  # the records keep their file order


def test_a_count_or_a_fraction():
    assert len(carve_indices(20, 4, seed=0)[1]) == 4
    assert len(carve_indices(20, 0.1, seed=0)[1]) == 2


def test_the_rows_carved_are_the_ones_earlier_releases_carved():
    """Caches, precomputed reference tables and reruns depend on which rows validate: pinned values."""
    assert carve_indices(10, 0.3, seed=42)[1] == [2, 3, 7]
    assert carve_indices(20, 4, seed=1)[1] == [5, 11, 17, 19]


@pytest.mark.parametrize("val_size", [0, 0.01, 20, 25])
def test_a_size_that_leaves_a_side_empty_is_refused_naming_the_unit(val_size):
    with pytest.raises(ValueError, match=rf"val_size={val_size} leaves no train or no validation prompts out of 20"):
        carve_indices(20, val_size, seed=0, unit="prompts")


def test_the_validation_split_is_found_by_its_usual_names():
    assert find_validation({"train": 1, "test": 2}) == "test"
    assert find_validation({"train": 1, "validation": 2, "test": 3}) == "validation"
    assert find_validation({"train": 1}) is None
