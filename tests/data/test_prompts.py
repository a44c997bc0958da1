"""Prompts alone are tokenised exactly as the preference pipeline tokenises a pair's prompt (text, HH-RLHF
transcripts, conversations under both template kinds, system prompts, truncation), and PromptDataModule
batches, shards and validates them."""

from __future__ import annotations

import pytest

from lightning_dpo.data import PreferenceDataModule
from lightning_dpo.data.prompt_datamodule import PromptDataModule
from lightning_dpo.data.prompts import build_prompts
from lightning_dpo.data.sources import PreferenceDataError, read_splits
from lightning_dpo.models import load_tokenizer

CHATS = [
    {
        "prompt": [{"role": "user", "content": f"What is {i} plus {i}?"}],
        "chosen": [{"role": "assistant", "content": f"Sure! It is {2 * i}."}],
        "rejected": [{"role": "assistant", "content": f"Ugh. {2 * i}."}],
    }
    for i in range(6)
]
TRANSCRIPTS = [
    {
        "chosen": f"\n\nHuman: Name {i}?\n\nAssistant: Of course! {i}.",
        "rejected": f"\n\nHuman: Name {i}?\n\nAssistant: No.",
    }
    for i in range(6)
]


def pipeline_prompts(path, tokenizer_dir, **kwargs) -> dict[str, list[int]]:
    """location -> prompt ids, as PreferenceDataModule builds them."""
    dm = PreferenceDataModule(dataset=str(path), tokenizer_name_or_path=str(tokenizer_dir), val_size=1, **kwargs)
    dm.setup("fit")
    out = {}
    for data in (dm.train_data, dm.val_data):
        out.update({loc: list(ids) for loc, ids in zip(data["location"], data["prompt_input_ids"])})
    return out


def prompt_ids(path, tokenizer_dir, **kwargs) -> dict[str, list[int]]:
    tokenizer = load_tokenizer(str(tokenizer_dir))
    prompts = build_prompts(read_splits(str(path))["train"], tokenizer, **kwargs)
    return {p.location: p.ids for p in prompts.prompts}


@pytest.mark.parametrize("kind", ["text", "transcripts", "bos_chat", "plain_chat"])
def test_prompt_ids_equal_the_preference_pipelines(
    kind, tmp_path, write_jsonl, tiny_data_dir, embedded_model_dir, bos_chat_tokenizer_dir, plain_chat_tokenizer_dir
):
    tokenizer = {"bos_chat": bos_chat_tokenizer_dir, "plain_chat": plain_chat_tokenizer_dir}.get(
        kind, embedded_model_dir
    )
    if kind == "text":
        path = tiny_data_dir / "train.jsonl"
    else:
        path = write_jsonl(tmp_path / "train.jsonl", TRANSCRIPTS if kind == "transcripts" else CHATS)
    system = "Be kind. " if kind != "transcripts" else None
    expected = pipeline_prompts(path, tokenizer, max_length=4096, system_prompt=system)
    got = prompt_ids(path, tokenizer, max_prompt_length=None, system_prompt=system)
    assert got == expected and len(got) >= 6
    # max_prompt_length keeps each prompt's end and its BOS, as keep_end cuts a prompt in training
    cut = prompt_ids(path, tokenizer, max_prompt_length=12, system_prompt=system)
    bos = load_tokenizer(str(tokenizer)).bos_token_id
    for location, ids in got.items():
        want = ids if len(ids) <= 12 else ([bos] if ids[0] == bos else []) + ids[len(ids) - 12 + (ids[0] == bos) :]
        assert cut[location] == want
    assert any(len(ids) > 12 for ids in got.values())  # the cut happened


def test_prompt_only_records_and_bad_ones_are_counted(tmp_path, write_jsonl, embedded_model_dir):
    rows = [
        {"prompt": "\n\nHuman: Hi?\n\nAssistant:"},
        {"prompt": "\n\nHuman: Hi?\n\nAssistant:"},  # duplicate
        {"prompt": "   "},  # empty
        {"question": "no prompt field"},
        "not json",
    ]
    path = write_jsonl(tmp_path / "p.jsonl", rows)
    tokenizer = load_tokenizer(str(embedded_model_dir))
    prompts = build_prompts(read_splits(str(path))["train"], tokenizer)
    assert [p.location for p in prompts.prompts] == [f"{path}:1"]
    assert prompts.prompts[0].ids[0] == tokenizer.bos_token_id and prompts.prompts[0].ids.count(0) == 1
    assert prompts.tally["read"] == 5 and prompts.tally["kept"] == 1
    assert prompts.tally["dropped"] == {"duplicate": 1, "empty_prompt": 1, "invalid_json": 1, "missing_field": 1}
    with pytest.raises((PreferenceDataError, ValueError), match=r"p.jsonl:2"):
        build_prompts(read_splits(str(path))["train"], tokenizer, strict=True)


def test_prompt_datamodule_batches_and_shards(tiny_data_dir, embedded_model_dir):
    dm = PromptDataModule(dataset=str(tiny_data_dir), tokenizer_name_or_path=str(embedded_model_dir), batch_size=4)
    dm.setup("fit")
    assert len(dm.train_prompts) == 48 and len(dm.val_prompts) == 16  # the directory's train and val splits
    batch = next(iter(dm.train_dataloader()))
    assert len(batch["prompt_input_ids"]) == 4 and batch["prompt_index"].shape == (4,)
    assert batch["prompt_text"][0].startswith("\n\nHuman:")
    order = [int(i) for b in dm.train_dataloader() for i in b["prompt_index"]]
    assert sorted(order) == list(range(48))  # each prompt once per epoch, in a seeded order
    assert order != list(range(48))
