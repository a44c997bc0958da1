"""Rankings and unpaired records: formats, ties, tokens, the KL derangement, and what is dropped."""

from __future__ import annotations

import json

import pytest

from lightning_dpo.data.groups import (
    GroupTally,
    read_examples,
    to_ranking,
    to_unpaired,
    tokenize_rankings,
    tokenize_unpaired,
)
from lightning_dpo.data.sources import PreferenceDataError
from lightning_dpo.data.truncation import TokenSettings
from lightning_dpo.models import load_tokenizer


def test_scores_ranks_and_ultrafeedback_records_sort_best_first():
    scored = to_ranking({"prompt": "Q", "completions": ["a", "b", "c"], "scores": [1, 3, 2]}, "x:1")
    assert scored.completions == ["b", "c", "a"] and scored.scores == [3.0, 2.0, 1.0]
    ranked = to_ranking({"prompt": "Q", "completions": ["a", "b", "c"], "ranks": [2, 3, 1]}, "x:2")
    assert ranked.completions == ["c", "a", "b"]
    ultra = {
        "instruction": "Q",
        "completions": [{"response": "a", "overall_score": 6.5}, {"response": "b", "overall_score": 8}],
    }
    assert to_ranking(ultra, "x:3").completions == ["b", "a"]


def test_ties_keep_the_record_order_and_all_tied_records_are_refused():
    tied = to_ranking({"prompt": "Q", "completions": ["a", "b", "c"], "scores": [1, 2, 2]}, "x:1")
    assert tied.completions == ["b", "c", "a"] and tied.scores == [2.0, 2.0, 1.0]
    with pytest.raises(PreferenceDataError, match="same score") as e:
        to_ranking({"prompt": "Q", "completions": ["a", "b"], "scores": [1, 1]}, "x:2")
    assert e.value.kind == "all_tied"


@pytest.mark.parametrize(
    "row, kind",
    [
        ({"prompt": "Q", "completions": ["a"], "scores": [1]}, "too_few_completions"),
        ({"prompt": "Q", "completions": ["a", "b"], "scores": [1]}, "not_a_number"),
        ({"prompt": "Q", "completions": ["a", "b"], "scores": [1, float("nan")]}, "not_a_number"),
        ({"prompt": "Q", "completions": ["a", "b"]}, "missing_field"),
        ({"completions": ["a", "b"], "scores": [1, 2]}, "missing_field"),
        ({"prompt": "Q", "completions": [{"role": "assistant"}, "b"], "scores": [1, 2]}, "not_a_string"),
    ],
)
def test_bad_rankings_name_their_reason(row, kind):
    with pytest.raises(PreferenceDataError) as e:
        to_ranking(row, "f.jsonl:7")
    assert e.value.kind == kind and "f.jsonl:7" in str(e.value)


def test_unpaired_rows_and_pairs_unpaired_on_request():
    assert to_unpaired({"prompt": "Q", "completion": "a", "label": False}, "x:1")[0].label is False
    pair = {"prompt": "Q", "chosen": " yes", "rejected": " no"}
    good, bad = to_unpaired(pair, "x:2", unpair=True)
    assert (good.completion, good.label, bad.completion, bad.label) == (" yes", True, " no", False)
    with pytest.raises(PreferenceDataError) as e:
        to_unpaired(pair, "x:3", unpair=False)
    assert e.value.kind == "paired_record"
    with pytest.raises(PreferenceDataError, match="bool"):
        to_unpaired({"prompt": "Q", "completion": "a", "label": "yes"}, "x:4")


def test_reading_counts_every_dropped_record():
    rows = [
        ("f:1", {"prompt": "Q", "completions": ["a", "b"], "scores": [1, 2]}),
        ("f:2", {"prompt": "Q", "completions": ["a", "b"], "scores": [1, 2]}),  # duplicate
        ("f:3", {"prompt": "Q", "completions": ["a", "b"], "scores": [2, 2]}),  # all tied
    ]
    tally = GroupTally()
    kept = read_examples(rows, to_ranking, tally)
    assert [loc for loc, _ in kept] == ["f:1"]
    assert tally.to_dict(1)["dropped"] == {"all_tied": 1, "duplicate": 1}
    assert "skipped 2 of 3" in tally.warning("train")
    with pytest.raises(PreferenceDataError):
        read_examples(rows, to_ranking, GroupTally(), strict=True)


@pytest.fixture(scope="module")
def tokenizer(embedded_model_dir):
    return load_tokenizer(str(embedded_model_dir))


def test_k_completions_share_one_prompt_and_end_with_one_eos(tokenizer):
    example = to_ranking(
        {"prompt": "\n\nHuman: Hi?\n\nAssistant:", "completions": [" Hi!", " Go.", " Hm"], "scores": [3, 1, 2]}, "x"
    )
    tally = GroupTally()
    (item,) = tokenize_rankings([("x", example)], tokenizer, TokenSettings(64), tally)
    for completion, text in zip(item["completions_input_ids"], example.completions):
        assert completion[-1] == tokenizer.eos_token_id and completion.count(tokenizer.eos_token_id) == 1
        full = tokenizer(example.prompt + text, add_special_tokens=True)["input_ids"]
        assert item["prompt_input_ids"] + completion[:-1] == full  # the whole text's own tokens
    assert item["scores"] == [3.0, 2.0, 1.0]
    other = to_ranking({"prompt": "P", "completions": ["a", "b", "c", "d"], "scores": [1, 2, 3, 4]}, "y")
    tally = GroupTally()
    assert len(tokenize_rankings([("x", example), ("y", other)], tokenizer, TokenSettings(64), tally)) == 1
    assert tally.dropped == {"completion_count": 1}


def test_truncation_keeps_the_prompt_end_and_drops_records_left_without_a_completion(tokenizer):
    long = " ".join(["word"] * 40)
    example = to_ranking({"prompt": "\n\nHuman: " + long, "completions": [" a b c d e f", " x"], "scores": [2, 1]}, "x")
    (item,) = tokenize_rankings([("x", example)], tokenizer, TokenSettings(16, 8), GroupTally())
    assert item["truncated"] and len(item["prompt_input_ids"]) + max(map(len, item["completions_input_ids"])) <= 16
    tally = GroupTally()
    assert not tokenize_rankings([("x", example)], tokenizer, TokenSettings(16, truncation_mode="keep_start"), tally)
    assert tally.dropped == {"no_completion_tokens": 1}


def test_kl_completions_are_a_seeded_derangement(tokenizer):
    examples = [
        ("x", to_unpaired({"prompt": f"Q{i}?", "completion": f" answer {i}", "label": i % 2 == 0}, "x")[0])
        for i in range(9)
    ]
    items = tokenize_unpaired(examples, tokenizer, TokenSettings(64), GroupTally(), seed=3)
    owns = [tuple(i["completion_input_ids"]) for i in items]
    kls = [tuple(i["kl_completion_input_ids"]) for i in items]
    assert sorted(kls) == sorted(owns) and all(a != b for a, b in zip(owns, kls))
    again = tokenize_unpaired(examples, tokenizer, TokenSettings(64), GroupTally(), seed=3)
    assert [i["kl_completion_input_ids"] for i in again] == [list(k) for k in kls]
    assert [i["label"] for i in items] == [i % 2 == 0 for i in range(9)]


def test_data_modules_report_and_batch(tmp_path, tiny_model_dir):
    from lightning_dpo.data.group_datamodule import RankingDataModule, UnpairedDataModule

    rows = [{"prompt": f"Q{i}?", "completions": [" a", " b", " c"], "scores": [i % 3, 1, 5]} for i in range(12)]
    rows.append({"prompt": "Q?", "completions": [" a", " b"], "scores": [1, 1]})
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = RankingDataModule(str(tmp_path), tokenizer_name_or_path=str(tiny_model_dir), batch_size=3, val_size=3)
    data.setup("fit")
    assert data.data_report["train"]["dropped"] == {"all_tied": 1}
    assert (len(data.train_data), len(data.val_data), data.num_pairs()) == (9, 3, 12)
    batch = next(iter(data.train_dataloader()))
    assert batch["input_ids"].shape[0] == 9 and batch["scores"].shape == (3, 3)
    assert bool((batch["scores"][:, :-1] >= batch["scores"][:, 1:]).all())  # best first
    unpaired = UnpairedDataModule(str(tmp_path), tokenizer_name_or_path=str(tiny_model_dir), batch_size=2)
    with pytest.raises(ValueError, match="no usable records"):
        unpaired.setup("fit")  # rankings are not unpaired records: every one skipped, and said so


def test_carved_validation_keeps_each_pair_on_one_side_and_kl_completions_within_their_split(tmp_path, tiny_model_dir):
    from lightning_dpo.data.group_datamodule import UnpairedDataModule

    rows = [{"prompt": f"Q{i}?", "chosen": f" yes {i}", "rejected": f" no {i}"} for i in range(20)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = UnpairedDataModule(str(tmp_path), tokenizer_name_or_path=str(tiny_model_dir), batch_size=2, val_size=5)
    data.setup("fit")
    train, val = data.train_data, data.val_data
    assert (len(train), len(val)) == (30, 10)  # 15 and 5 pairs, each pair's two examples on one side
    assert not {i["location"] for i in train} & {i["location"] for i in val}
    for split in (train, val):
        owns = [tuple(i["completion_input_ids"]) for i in split]
        kls = [tuple(i["kl_completion_input_ids"]) for i in split]
        assert sorted(kls) == sorted(owns) and all(a != b for a, b in zip(owns, kls))  # a derangement of the split
    assert data.data_report["labels"] == {
        "train": {"desirable": 15, "undesirable": 15},
        "val": {"desirable": 5, "undesirable": 5},
    }
