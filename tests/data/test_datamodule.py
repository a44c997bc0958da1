"""PreferenceDataModule end to end on local files."""

import json

import pytest

from lightning_dpo import PreferenceDataModule
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
    data = PreferenceDataModule(dataset=str(tmp_path), tokenizer_name_or_path=str(tiny_model_dir))
    with pytest.raises(PreferenceDataError, match=r"train\.jsonl:2, field 'rejected': the field is missing"):
        data.setup("fit")


def test_pairs_without_room_for_a_completion_are_dropped_loudly(tmp_path, tiny_model_dir):
    rows = [{"prompt": "word " * (40 if i % 2 else 1), "chosen": " yes", "rejected": " no"} for i in range(10)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    data = PreferenceDataModule(
        dataset=str(tmp_path), tokenizer_name_or_path=str(tiny_model_dir), max_length=20, max_prompt_length=None,
        val_size=2,
    )
    with pytest.warns(UserWarning, match=r"dropped 5 of 10 pairs .*train\.jsonl:2"):
        data.setup("fit")
    assert len(data.train_data) + len(data.val_data) == 5


def test_tokenizer_is_required_without_a_trainer(tiny_data_dir):
    with pytest.raises(ValueError, match="tokenizer_name_or_path"):
        PreferenceDataModule(dataset=str(tiny_data_dir)).setup("fit")
