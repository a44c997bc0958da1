"""Conversations as they come: per-record tool schemas, multi-turn prompts, template drift."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from lightning_dpo.data.formats import example_from_columns, example_to_columns, to_example
from lightning_dpo.data.sources import PreferenceDataError
from lightning_dpo.data.tokenize import tokenize_example
from lightning_dpo.data.truncation import TokenSettings

from .conftest import BOS_TEMPLATE

# BOS_TEMPLATE with a tools block after BOS: each tool's name and description, the way real templates list them.
TOOLS_TEMPLATE = BOS_TEMPLATE.replace(
    "{{ bos_token }}",
    "{{ bos_token }}{% if tools %}<|tools|>\n{% for t in tools %}{{ t['function']['name'] }}: "
    "{{ t['function']['description'] }}\n{% endfor %}{% endif %}",
)
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
Q = {"role": "user", "content": "Weather in Oslo?"}
ROW = {
    "prompt": [Q],
    "chosen": [{"role": "assistant", "content": "I will check."}],
    "rejected": [{"role": "assistant", "content": "No idea."}],
}


@pytest.fixture(scope="module")
def bos_tok(bos_chat_tokenizer_dir):
    return AutoTokenizer.from_pretrained(bos_chat_tokenizer_dir)


def decoded(tokenizer, out):
    return [tokenizer.decode(out[k]) for k in ("prompt_input_ids", "chosen_input_ids", "rejected_input_ids")]


@pytest.mark.parametrize("as_json", [False, True], ids=["list", "json string"])
def test_tools_reach_the_chat_template(bos_tok, as_json):
    row = {**ROW, "tools": json.dumps([WEATHER]) if as_json else [WEATHER]}
    example = to_example(row, "rows.jsonl:1")
    assert example.tools == [WEATHER]
    out = tokenize_example(example, bos_tok, TokenSettings(128, chat_template=TOOLS_TEMPLATE))
    prompt, chosen, rejected = decoded(bos_tok, out)
    assert prompt == "<s><|tools|>\nget_weather: The weather in a city\n<|user|>\nWeather in Oslo?</s>\n<|assistant|>\n"
    assert (chosen, rejected) == ("I will check.</s>", "No idea.</s>")
    # Without tools the same template renders no tools block: the tools came from the record.
    plain = tokenize_example(to_example(ROW, "rows.jsonl:2"), bos_tok, TokenSettings(128, chat_template=TOOLS_TEMPLATE))
    assert "<|tools|>" not in decoded(bos_tok, plain)[0]


def test_tools_survive_the_columns_and_arrow_nulls_are_dropped():
    # Arrow gives every schema the union of the fields: the ones a schema lacks come back as null.
    arrow_like = {**WEATHER, "function": {**WEATHER["function"], "strict": None}}
    example = to_example({**ROW, "tools": [arrow_like]}, "hub[train] row 0")
    assert example.tools == [WEATHER]
    assert example_from_columns(example_to_columns(example)) == example
    untooled = to_example(ROW, "x")
    assert untooled.tools is None and example_from_columns(example_to_columns(untooled)) == untooled
    for empty in (None, [], "", "[]"):
        assert to_example({**ROW, "tools": empty}, "x").tools is None


def test_a_renamed_tools_column(bos_tok):
    example = to_example({**ROW, "functions": [WEATHER]}, "x", columns={"tools": "functions"})
    assert example.tools == [WEATHER]


@pytest.mark.parametrize(
    "tools, message",
    [
        ("[{not json", "not valid JSON"),
        ([["get_weather"]], "list of tool schemas"),
        ({"name": "get_weather"}, "list of tool schemas"),
    ],
)
def test_malformed_tools_are_bad_records(tools, message):
    with pytest.raises(PreferenceDataError, match=message) as err:
        to_example({**ROW, "tools": tools}, "rows.jsonl:7")
    assert err.value.location == "rows.jsonl:7" and err.value.field == "tools"


def test_tools_on_a_text_record_are_refused():
    with pytest.raises(PreferenceDataError, match="conversational records"):
        to_example({"prompt": "Q:", "chosen": " a", "rejected": " b", "tools": [WEATHER]}, "rows.jsonl:3")


def test_tools_in_a_data_file_reach_the_tokens(tmp_path, write_jsonl, bos_chat_tokenizer_dir):
    from lightning_dpo import PreferenceDataModule

    rows = [
        {
            "chosen": [Q, {"role": "assistant", "content": f"Checking {i}."}],
            "rejected": [Q, {"role": "assistant", "content": f"No {i}."}],
            "tools": json.dumps([WEATHER]),
        }
        for i in range(4)
    ]
    write_jsonl(tmp_path / "train.jsonl", rows)
    write_jsonl(tmp_path / "val.jsonl", rows[:2])
    data = PreferenceDataModule(
        dataset=str(tmp_path),
        tokenizer_name_or_path=str(bos_chat_tokenizer_dir),
        chat_template=TOOLS_TEMPLATE,
        max_length=128,
        batch_size=2,
    )
    data.setup("fit")
    prompt = data.tokenizer.decode(data.train_data[0]["prompt_input_ids"])
    assert prompt.startswith("<s><|tools|>\nget_weather: The weather in a city\n<|user|>")
