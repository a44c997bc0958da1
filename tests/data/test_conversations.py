"""Conversations as they come: per-record tool schemas, multi-turn prompts, template drift."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from lightning_dpo.data.formats import example_from_columns, example_to_columns, to_example
from lightning_dpo.data.report import format_report
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


# -- multi-turn prompts ------------------------------------------------------------------------------

TURNS = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "Hi."},
    {"role": "assistant", "content": "Hello."},
    {"role": "user", "content": "Capital of France?"},
]


def test_full_conversations_sharing_earlier_assistant_turns(bos_tok):
    # UltraFeedback-style rows: each side the whole conversation; the shared turns, an assistant one among them,
    # are the prompt.
    row = {
        "chosen": [*TURNS, {"role": "assistant", "content": "Paris."}],
        "rejected": [*TURNS, {"role": "assistant", "content": "Lyon."}],
    }
    example = to_example(row, "uf.jsonl:1")
    assert example.prompt == TURNS and example.chosen == [{"role": "assistant", "content": "Paris."}]
    out = tokenize_example(example, bos_tok, TokenSettings(128))
    assert decoded(bos_tok, out) == [
        "<s><|system|>\nBe brief.</s>\n<|user|>\nHi.</s>\n<|assistant|>\nHello.</s>\n<|user|>\nCapital of France?</s>\n"
        "<|assistant|>\n",
        "Paris.</s>",
        "Lyon.</s>",
    ]
    assert out["boundary_tokens"] == 0 and out["drift"] == ""


def test_a_completion_of_several_turns_keeps_its_inner_eos(bos_tok):
    more = [
        {"role": "assistant", "content": "Paris."},
        {"role": "user", "content": "Sure?"},
        {"role": "assistant", "content": "Yes."},
    ]
    row = {"chosen": [*TURNS, *more], "rejected": [*TURNS, {"role": "assistant", "content": "Lyon."}]}
    out = tokenize_example(to_example(row, "uf.jsonl:2"), bos_tok, TokenSettings(128))
    assert decoded(bos_tok, out)[1] == "Paris.</s>\n<|user|>\nSure?</s>\n<|assistant|>\nYes.</s>"


# -- template drift ----------------------------------------------------------------------------------

# Like templates that add an empty thinking block only to the generation prompt.
THINK_TEMPLATE = BOS_TEMPLATE.replace("<|assistant|>\n{% endif %}", "<|assistant|>\n<think></think>{% endif %}")


def test_drift_is_kept_split_where_the_tokens_diverge_and_flagged(bos_tok):
    example = to_example(ROW, "rows.jsonl:1")
    out = tokenize_example(example, bos_tok, TokenSettings(128, chat_template=THINK_TEMPLATE))
    assert decoded(bos_tok, out) == [
        "<s><|user|>\nWeather in Oslo?</s>\n<|assistant|>\n",
        "I will check.</s>",
        "No idea.</s>",
    ]
    assert "<think></think>" in out["drift"] and "data.chat_template" in out["drift"]
    same = tokenize_example(example, bos_tok, TokenSettings(128, chat_template=BOS_TEMPLATE))
    assert same["drift"] == "" and same["prompt_input_ids"] == out["prompt_input_ids"]


def _drift_data(tmp_path, write_jsonl, tokenizer_dir, **overrides):
    from lightning_dpo import PreferenceDataModule

    rows = [
        {
            "prompt": [{"role": "user", "content": f"Question {i}?"}],
            "chosen": [{"role": "assistant", "content": f"Yes {i}."}],
            "rejected": [{"role": "assistant", "content": f"No {i}."}],
        }
        for i in range(6)
    ]
    write_jsonl(tmp_path / "train.jsonl", rows)
    write_jsonl(tmp_path / "val.jsonl", rows[:2])
    # The template drifts only for prompts that mention "3": one record of train.
    template = BOS_TEMPLATE.replace(
        "<|assistant|>\n{% endif %}",
        "<|assistant|>\n{% if '3' in messages[-1]['content'] %}<think></think>{% endif %}{% endif %}",
    )
    kwargs = dict(dataset=str(tmp_path), tokenizer_name_or_path=str(tokenizer_dir), chat_template=template)
    return PreferenceDataModule(**{**kwargs, "max_length": 64, "batch_size": 2, **overrides})


def test_drift_is_counted_with_its_first_location_and_refused_by_strict(tmp_path, write_jsonl, bos_chat_tokenizer_dir):
    data = _drift_data(tmp_path, write_jsonl, bos_chat_tokenizer_dir)
    data.setup("fit")
    report = data.data_report["train"]
    assert report["kept"] == 6 and report["dropped"] == {}  # kept: drift is reported, not dropped
    assert report["template_drift"] == 1
    assert report["lint"]["template_drift"] == {"count": 1, "first": [f"{tmp_path / 'train.jsonl'}:4"]}
    text = format_report(data.data_report)
    assert "template renders the prompt differently" in text and "'<think></think>" in text  # where texts differ
    assert [e["location"] for e in report["first_drift"]] == [f"{tmp_path / 'train.jsonl'}:4"]
    # Cached without strict, then strict: the same record is refused, from the stored tally.
    strict = _drift_data(tmp_path, write_jsonl, bos_chat_tokenizer_dir, strict=True)
    with pytest.raises(PreferenceDataError, match=r"train\.jsonl:4.*renders the prompt alone") as err:
        strict.setup("fit")
    assert err.value.kind == "template_drift"


def test_strict_refuses_drift_while_tokenising(tmp_path, write_jsonl, bos_chat_tokenizer_dir):
    data = _drift_data(tmp_path, write_jsonl, bos_chat_tokenizer_dir, strict=True)
    with pytest.raises(PreferenceDataError, match=r"train\.jsonl:4.*renders the prompt alone"):
        data.setup("fit")
