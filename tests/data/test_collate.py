"""Concatenated batches: chosen rows then rejected rows, masks from lengths."""

import torch

from lightning_dpo.data.collate import PreferenceCollator


def test_layout_and_masks():
    pairs = [
        {"prompt_input_ids": [1, 5], "chosen_input_ids": [6, 2], "rejected_input_ids": [7, 8, 9, 2]},
        {"prompt_input_ids": [1], "chosen_input_ids": [2], "rejected_input_ids": [3, 2]},
    ]
    batch = PreferenceCollator(pad_token_id=2, pad_to_multiple_of=4)(pairs)
    assert batch["input_ids"].tolist() == [
        [1, 5, 6, 2, 2, 2, 2, 2],
        [1, 2, 2, 2, 2, 2, 2, 2],
        [1, 5, 7, 8, 9, 2, 2, 2],
        [1, 3, 2, 2, 2, 2, 2, 2],
    ]
    assert batch["attention_mask"].sum(1).tolist() == [4, 2, 6, 3]
    assert batch["completion_mask"].tolist() == [
        [0, 0, 1, 1, 0, 0, 0, 0],
        [0, 1, 0, 0, 0, 0, 0, 0],
        [0, 0, 1, 1, 1, 1, 0, 0],
        [0, 1, 1, 0, 0, 0, 0, 0],
    ]
    assert all(t.dtype == torch.long for t in batch.values())
