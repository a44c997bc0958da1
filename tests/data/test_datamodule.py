"""PreferenceDataModule end to end on local files."""

import json
from collections import Counter
from types import SimpleNamespace

import pytest
import torch
from torch.utils.data import DistributedSampler

from lightning_dpo import PreferenceDataModule
from lightning_dpo.data.report import flatten_report, format_report
from lightning_dpo.data.sources import PreferenceDataError


def test_batches_from_the_bundled_layout(tiny_data_dir, tiny_model_dir):
    data = PreferenceDataModule(dataset=str(tiny_data_dir), tokenizer_name_or_path=str(tiny_model_dir), batch_size=5)
    data.setup("fit")
    assert (len(data.train_data), len(data.val_data)) == (48, 16)  # val.jsonl found as the validation split
    batch = next(iter(data.train_dataloader()))
    assert batch["input_ids"].shape[0] == 10
    eos = data.tokenizer.eos_token_id
    for row, mask in zip(batch["input_ids"], batch["completion_mask"]):
        completion = row[mask.bool()]
        assert completion[-1] == eos and (completion[:-1] != eos).all()
        assert row[0] == data.tokenizer.bos_token_id


def test_hh_rows_and_carved_validation(tmp_path, tiny_model_dir):
    rows = [
        {
            "chosen": f"\n\nHuman: What is {i} plus 1?\n\nAssistant: Happy to help: {i + 1}.",
            "rejected": f"\n\nHuman: What is {i} plus 1?\n\nAssistant: Ugh. {i + 1}.",
        }
        for i in range(20)
    ]
    (tmp_path / "hh.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = PreferenceDataModule(
        dataset=str(tmp_path / "hh.jsonl"), tokenizer_name_or_path=str(tiny_model_dir), val_size=0.25, seed=1
    )
    data.setup("fit")
    assert (len(data.train_data), len(data.val_data)) == (15, 5)
    again = PreferenceDataModule(
        dataset=str(tmp_path / "hh.jsonl"), tokenizer_name_or_path=str(tiny_model_dir), val_size=0.25, seed=1
    )
    again.setup("fit")
    assert again.val_data["location"] == data.val_data["location"]  # the carve-out is seeded
    prompt = data.tokenizer.decode(data.train_data[0]["prompt_input_ids"], skip_special_tokens=True)
    assert prompt.endswith("\n\nAssistant:")


def test_a_bad_row_is_named_by_file_line_and_field(tmp_path, tiny_model_dir):
    good = {"prompt": "Q?", "chosen": " yes", "rejected": " no"}
    lines = [json.dumps(good), json.dumps({"prompt": "Q?", "chosen": " yes"}), json.dumps(good)]
    (tmp_path / "train.jsonl").write_text("\n".join(lines) + "\n")
    data = PreferenceDataModule(dataset=str(tmp_path), tokenizer_name_or_path=str(tiny_model_dir), strict=True)
    with pytest.raises(PreferenceDataError, match=r"train\.jsonl:2, field 'rejected': the field is missing"):
        data.setup("fit")


def test_pairs_without_room_for_a_completion_are_dropped_loudly(tmp_path, tiny_model_dir):
    rows = [
        {"prompt": f"q{i} " + "word " * (40 if i % 2 else 1), "chosen": " yes", "rejected": " no"} for i in range(10)
    ]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    options = dict(dataset=str(tmp_path), tokenizer_name_or_path=str(tiny_model_dir), max_length=20, val_size=2)
    data = PreferenceDataModule(**options, truncation_mode="keep_start")  # a long prompt fills max_length
    with pytest.warns(
        UserWarning, match=r"dropped 5 of 10 records \(5 no_completion_tokens\).*train\.jsonl:2.*keep_end"
    ):
        data.setup("fit")
    assert len(data.train_data) + len(data.val_data) == 5
    # keep_end cuts the long prompts' starts instead (down to half of max_length), so every pair stays.
    data = PreferenceDataModule(**options)
    data.setup("fit")
    assert len(data.train_data) + len(data.val_data) == 10
    assert data.data_report["train"]["cut"]["prompt"]["pairs"] > 0


def test_tokenizer_is_required_without_a_trainer(tiny_data_dir):
    with pytest.raises(ValueError, match="tokenizer_name_or_path"):
        PreferenceDataModule(dataset=str(tiny_data_dir)).setup("fit")


# -- formats and options end to end ------------------------------------------------------------------------


def _pairs(n, offset=0):
    return [
        {"prompt": f"Question {i}?", "chosen": f" Good answer {i}.", "rejected": f" Bad {i}."}
        for i in range(offset, offset + n)
    ]


def test_conversational_rows_through_the_datamodule(tmp_path, write_jsonl, bos_chat_tokenizer_dir):
    user = lambda i: {"role": "user", "content": f"Question {i}?"}  # noqa: E731
    reply = lambda text: {"role": "assistant", "content": text}  # noqa: E731
    rows = [{"chosen": [user(i), reply(f"Yes {i}.")], "rejected": [user(i), reply("No.")]} for i in range(12)]
    write_jsonl(tmp_path / "train.jsonl", rows)
    data = PreferenceDataModule(
        dataset=str(tmp_path / "train.jsonl"),
        tokenizer_name_or_path=str(bos_chat_tokenizer_dir),
        val_size=2,
        system_prompt="Be brief.",
        batch_size=3,
    )
    data.setup("fit")
    tok = data.tokenizer
    first = data.train_data[0]
    assert tok.decode(first["prompt_input_ids"]).startswith("<s><|system|>\nBe brief.</s>\n<|user|>\nQuestion")
    assert tok.decode(first["chosen_input_ids"]).endswith(".</s>")
    batch = next(iter(data.train_dataloader()))
    assert batch["input_ids"].shape[0] == 6 and (batch["input_ids"] == tok.bos_token_id).sum() == 6


def test_mixture_with_weights_columns_and_hub_style_splits(tmp_path, write_jsonl, tiny_model_dir):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    write_jsonl(a / "train.jsonl", _pairs(10))
    write_jsonl(a / "test.jsonl", _pairs(3, offset=100))
    renamed = [{"question": r["prompt"], "good": r["chosen"], "bad": r["rejected"]} for r in _pairs(8, offset=50)]
    write_jsonl(b / "train.jsonl", renamed)
    data = PreferenceDataModule(
        dataset=[
            {"path": str(a), "weight": 0.5},
            {"path": str(b), "weight": 2, "columns": {"prompt": "question", "chosen": "good", "rejected": "bad"}},
        ],
        tokenizer_name_or_path=str(tiny_model_dir),
        seed=3,
    )
    data.setup("fit")
    report = data.data_report["train"]
    assert [s["read"] for s in report["sources"]] == [10, 8] and report["pairs"] == 5 + 16
    origins = Counter(data.train_data["source"])
    assert origins == {0: 5, 1: 16}
    assert len(data.val_data) == 3  # a's test split; b has none
    again = PreferenceDataModule(**data.hparams)
    again.setup("fit")
    assert again.train_data["location"] == data.train_data["location"]  # the subsample is seeded
    # Hyperparameters stay primitive (checkpoints load with weights_only=True).
    assert all(isinstance(s, dict) for s in data.hparams["dataset"])


def test_keep_start_truncation_and_length_grouping(tmp_path, write_jsonl, tiny_model_dir):
    rows = [
        {"prompt": f"q{i}" + " word" * (i % 3), "chosen": " yes" * (i % 9 + 1), "rejected": " no" * (i % 9 + 1)}
        for i in range(40)
    ]
    write_jsonl(tmp_path / "train.jsonl", rows)
    data = PreferenceDataModule(
        dataset=str(tmp_path),
        tokenizer_name_or_path=str(tiny_model_dir),
        max_length=14,
        max_prompt_length=None,
        truncation_mode="keep_start",
        group_by_length=True,
        batch_size=4,
        val_size=4,
    )
    data.setup("fit")
    lengths = [
        len(r["prompt_input_ids"]) + max(len(r["chosen_input_ids"]), len(r["rejected_input_ids"]))
        for r in data.train_data
    ]
    assert max(lengths) <= 14 and data.data_report["train"]["truncated"] > 0
    padding = data.data_report["train"]["padding"]
    assert padding["grouped_by_length"] < padding["shuffled"]
    loader = data.train_dataloader()
    assert isinstance(loader.sampler, DistributedSampler) and loader.sampler.group_by_length
    assert sum(len(b["input_ids"]) for b in loader) == 2 * len(data.train_data)


def test_the_tiny_config_default_still_loads(tiny_model_dir):
    data = PreferenceDataModule(tokenizer_name_or_path=str(tiny_model_dir), max_length=128, max_prompt_length=64)
    data.setup("fit")
    assert (len(data.train_data), len(data.val_data)) == (2000, 200)


def test_pair_batches_give_every_rank_the_same_count(tiny_data_dir, tiny_model_dir):
    data = PreferenceDataModule(dataset=str(tiny_data_dir), tokenizer_name_or_path=str(tiny_model_dir), val_size=3)
    data.setup("fit")
    n = data.num_pairs()  # 64: 48 train + 16 val
    for world in (3, 5):  # 64 is not a multiple of either
        shares = [torch.cat([b["pair_index"] for b in data.pair_batches(4, rank, world)]) for rank in range(world)]
        assert len({len(s) for s in shares}) == 1
        assert set(torch.cat(shares).tolist()) == set(range(n))


def test_batches_are_pinned_for_a_gpu_only(tiny_data_dir, tiny_model_dir):
    data = PreferenceDataModule(dataset=str(tiny_data_dir), tokenizer_name_or_path=str(tiny_model_dir), batch_size=4)
    data.setup("fit")
    assert not data.train_dataloader().pin_memory and not data.val_dataloader().pin_memory  # no trainer: no GPU
    data.trainer = SimpleNamespace(strategy=SimpleNamespace(root_device=torch.device("cuda", 0)))
    assert data._pin_memory()
    data.trainer = None
    data.hparams.pin_memory = True  # asked for explicitly
    assert data.val_dataloader().pin_memory


def test_only_max_length_is_enough_and_the_report_counts_cut_tokens(tmp_path, write_jsonl, tiny_model_dir):
    """A user's first ``max_length`` works with the default ``max_prompt_length`` (half of it); a pair that fits
    is not cut, and the tokens cut are reported by cause."""
    long_prompt = "Q " + "word " * 60  # about 60 tokens
    rows = [{"prompt": long_prompt + str(i), "chosen": " yes" * (i % 4 + 1), "rejected": " no"} for i in range(12)]
    rows += [{"prompt": f"short {i}", "chosen": " yes" * 50, "rejected": " no"} for i in range(12)]
    write_jsonl(tmp_path / "train.jsonl", rows)
    data = PreferenceDataModule(
        dataset=str(tmp_path / "train.jsonl"), tokenizer_name_or_path=str(tiny_model_dir), max_length=64, val_size=2
    )
    data.setup("fit")
    report = data.data_report["train"]
    pairs = [*data.train_data, *data.val_data]
    assert len(pairs) == 24 and all(p["length"] <= 64 for p in pairs)
    prompt_cut = sum(p["prompt_length"] - len(p["prompt_input_ids"]) for p in data.train_data)
    completion_cut = sum(
        p[f"{side}_length"] - len(p[f"{side}_input_ids"]) for p in data.train_data for side in ("chosen", "rejected")
    )
    assert (
        report["cut"]["prompt"]["tokens"] == prompt_cut > 0
        and report["cut"]["completion"]["tokens"] == completion_cut > 0
    )
    for pair in pairs:
        fits = pair["prompt_length"] + max(pair["chosen_length"], pair["rejected_length"]) <= 64
        assert pair["truncated"] != fits
        if not fits:  # cut exactly to max_length, the prompt kept down to its floor of 32 at least
            assert pair["length"] == 64 and len(pair["prompt_input_ids"]) >= min(pair["prompt_length"], 32)
    flat = flatten_report(data.data_report)
    assert flat["data/train/cut/prompt/tokens"] == prompt_cut
    assert "from prompt starts" in format_report(data.data_report)
    assert PreferenceDataModule(max_length=256).hparams.max_prompt_length is None  # no error at the defaults
    with pytest.raises(ValueError, match=r"max_prompt_length \(256\)"):
        PreferenceDataModule(max_length=256, max_prompt_length=256)
