"""Completion targets and padding-free packing of concatenated batches."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from lightning_dpo.data.collate import PreferenceCollator
from lightning_dpo.ops.packing import (
    batch_padding_fraction,
    pack,
    sequence_lengths,
    shared_prompt_lengths,
    token_layout,
)

PAIRS = [
    {"prompt_input_ids": [1, 5, 6, 7, 8], "chosen_input_ids": [9, 10, 2], "rejected_input_ids": [11, 2]},
    {"prompt_input_ids": [1, 5], "chosen_input_ids": [3, 2], "rejected_input_ids": [4, 4, 12, 13, 14, 2]},
]


def rows_of(pairs):
    return [p["prompt_input_ids"] + p["chosen_input_ids"] for p in pairs] + [
        p["prompt_input_ids"] + p["rejected_input_ids"] for p in pairs
    ]


def test_layout_lists_the_positions_that_predict_completion_tokens():
    batch = PreferenceCollator(pad_token_id=2)(PAIRS)
    layout = token_layout(batch)
    assert layout.rows.tolist() == [0, 0, 0, 1, 1, 2, 2, 3, 3, 3, 3, 3, 3]
    assert layout.cols.tolist() == [4, 5, 6, 1, 2, 4, 5, 1, 2, 3, 4, 5, 6]
    assert layout.labels.tolist() == [9, 10, 2, 3, 2, 11, 2, 4, 4, 12, 13, 14, 2]


def check_pack(pairs, share):
    batch = PreferenceCollator(pad_token_id=0)(pairs)
    layout = token_layout(batch)
    packed = pack(batch, layout, share_prompt=share)
    ids, positions = packed.input_ids[0], packed.position_ids[0]
    # Each span, with its prefix, is one original row's tokens at their original positions.
    rows = rows_of(pairs)
    order = [r for i in range(len(pairs)) for r in (i, i + len(pairs))] if packed.shared_prompt else range(len(rows))
    assert packed.spans[0][0] == 0 and packed.spans[-1][1] == ids.shape[0]
    for (start, end, p_start, p_end), row in zip(packed.spans, order):
        seen = torch.cat([ids[p_start:p_end], ids[start:end]]).tolist()
        assert seen == rows[row]
        assert torch.cat([positions[p_start:p_end], positions[start:end]]).tolist() == list(range(len(rows[row])))
    # The output at each target's packed index sits on the token that precedes the target in its row.
    for n, t, index in zip(layout.rows.tolist(), layout.cols.tolist(), packed.index.tolist()):
        assert ids[index] == rows[n][t] and positions[index] == t
    saved = 1 - packed.tokens_per_sequence.sum() / batch["input_ids"].numel()
    return packed, float(saved)


def test_pack_sequence_by_sequence():
    packed, saved = check_pack(PAIRS, share=False)
    assert not packed.shared_prompt
    assert packed.cu_seqlens.tolist() == [0, 8, 12, 19, 27] and packed.max_length == 8
    assert abs(saved - 5 / 32) < 1e-6  # 27 real tokens of 4 × 8 slots


def test_pack_with_shared_prompts():
    packed, saved = check_pack(PAIRS, share=True)
    assert packed.shared_prompt
    assert packed.spans == ((0, 8, 0, 0), (8, 10, 0, 5), (10, 14, 10, 10), (14, 20, 10, 12))
    assert packed.tokens_per_sequence.tolist() == [8, 4, 2, 6]
    assert abs(saved - 12 / 32) < 1e-6


def test_prompts_that_differ_are_not_shared():
    batch = PreferenceCollator(pad_token_id=0)(PAIRS)
    assert shared_prompt_lengths(batch).tolist() == [5, 2]
    batch["input_ids"][2, 1] = 99  # the first pair's rejected prompt differs
    assert shared_prompt_lengths(batch) is None
    assert not pack(batch, token_layout(batch), share_prompt=True).shared_prompt


def test_left_padding_is_not_packed():
    batch = PreferenceCollator(pad_token_id=0)(PAIRS)
    batch["attention_mask"] = batch["attention_mask"].flip(-1)
    assert sequence_lengths(batch["attention_mask"]) is None
    assert pack(batch, token_layout(batch)) is None


def test_batch_padding_fraction():
    batch = PreferenceCollator(pad_token_id=0)(PAIRS)
    assert abs(float(batch_padding_fraction(batch)) - 5 / 32) < 1e-6


tokens = st.lists(st.integers(3, 50), min_size=1, max_size=6)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(tokens, tokens, tokens), min_size=1, max_size=4), st.booleans())
def test_any_batch_packs_consistently(raw, share):
    pairs = [{"prompt_input_ids": [1, *p], "chosen_input_ids": c, "rejected_input_ids": r} for p, c, r in raw]
    check_pack(pairs, share)


RANKINGS = [
    {"prompt_input_ids": [1, 5, 6, 7], "completions_input_ids": [[9, 2], [10, 11, 2], [12, 2]], "scores": [3, 2, 1]},
    {"prompt_input_ids": [1, 8], "completions_input_ids": [[3, 2], [4, 2], [13, 14, 15, 2]], "scores": [1, 1, 0]},
]


def test_a_ranking_shares_its_prompt_across_k_completions():
    from lightning_dpo.data.collate import RankingCollator

    batch = RankingCollator(pad_token_id=0)(RANKINGS)
    assert batch["input_ids"].shape[0] == 6 and batch["scores"].shape == (2, 3)
    assert shared_prompt_lengths(batch).tolist() == [4, 2]
    layout = token_layout(batch)
    packed = pack(batch, layout, share_prompt=True)
    # Prompt 0 once (with its first completion), its 2nd and 3rd completions attend to it; then prompt 1.
    assert packed.spans == (
        (0, 6, 0, 0),
        (6, 9, 0, 4),
        (9, 11, 0, 4),
        (11, 15, 11, 11),
        (15, 17, 11, 13),
        (17, 21, 11, 13),
    )
    assert packed.span_rows == (0, 2, 4, 1, 3, 5)
    ids, positions = packed.input_ids[0], packed.position_ids[0]
    rows = [r["prompt_input_ids"] + c for c_i in range(3) for r in RANKINGS for c in [r["completions_input_ids"][c_i]]]
    for (start, end, p_start, p_end), row in zip(packed.spans, packed.span_rows):
        assert torch.cat([ids[p_start:p_end], ids[start:end]]).tolist() == rows[row]
        assert torch.cat([positions[p_start:p_end], positions[start:end]]).tolist() == list(range(len(rows[row])))
    for n, t, index in zip(layout.rows.tolist(), layout.cols.tolist(), packed.index.tolist()):
        assert ids[index] == rows[n][t] and positions[index] == t
    assert packed.tokens_per_sequence.tolist() == [6, 4, 3, 2, 2, 4]
    batch["input_ids"][4, 1] = 99  # the first prompt's third row differs
    assert shared_prompt_lengths(batch) is None
