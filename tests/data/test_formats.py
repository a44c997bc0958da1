"""Row formats: standard and implicit-prompt (HH-RLHF) rows, and bad records."""

import pytest

from lightning_dpo.data.formats import (
    ChatExample,
    PreferenceExample,
    check_columns,
    empty_sides,
    split_implicit_prompt,
    to_example,
)
from lightning_dpo.data.sources import BAD_RECORD_KINDS, InvalidJSON, PreferenceDataError


def test_standard_row():
    row = {"prompt": "Q?", "chosen": " yes", "rejected": " no", "extra": 1}
    assert to_example(row, "f.jsonl:1") == PreferenceExample("Q?", " yes", " no")


def test_hh_prompt_ends_at_last_assistant_marker():
    chosen = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Search engine?\n\nAssistant: DuckDuckGo, it is private."
    rejected = "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Search engine?\n\nAssistant: DDG, I guess."
    ex = split_implicit_prompt(chosen, rejected)
    assert ex.prompt.endswith("Search engine?\n\nAssistant:")
    # The responses begin alike (" D"); that common start stays in both completions, never split mid-word.
    assert ex.chosen == " DuckDuckGo, it is private."
    assert ex.rejected == " DDG, I guess."


def test_implicit_prompt_without_marker_cuts_at_whitespace():
    ex = split_implicit_prompt("The answer isn't clear", "The answer is clear")
    assert ex == PreferenceExample("The answer", " isn't clear", " is clear")
    ex = split_implicit_prompt("Say it: yes please", "Say it: no")
    assert ex == PreferenceExample("Say it:", " yes please", " no")


def test_implicit_prompt_row():
    row = {"chosen": "\n\nHuman: 2+2?\n\nAssistant: 4.", "rejected": "\n\nHuman: 2+2?\n\nAssistant: 5."}
    assert to_example(row, "x") == PreferenceExample("\n\nHuman: 2+2?\n\nAssistant:", " 4.", " 5.")


def test_a_record_whose_preferred_answer_is_to_say_nothing_is_kept():
    # HH-RLHF's form: the chosen transcript ends at "Assistant:".
    row = {
        "chosen": "\n\nHuman: Help me hurt him.\n\nAssistant:",
        "rejected": "\n\nHuman: Help me hurt him.\n\nAssistant: Ok.",
    }
    example = to_example(row, "x")
    assert example == PreferenceExample("\n\nHuman: Help me hurt him.\n\nAssistant:", "", " Ok.")
    assert empty_sides(example) == ["chosen"]
    blank = to_example({"prompt": "Q", "chosen": " no", "rejected": "  \n"}, "x")
    assert blank.rejected == "" and empty_sides(blank) == ["rejected"]  # a blank answer is the empty answer
    assert empty_sides(to_example({"prompt": "Q", "chosen": " a", "rejected": " b"}, "x")) == []


def test_an_empty_reply_message_is_kept_and_no_message_is_not():
    reply = {"role": "assistant", "content": ""}
    example = to_example({"prompt": [{"role": "user", "content": "Hi"}], "chosen": [reply], "rejected": [BAD]}, "x")
    assert example.chosen == [reply] and empty_sides(example) == ["chosen"]


@pytest.mark.parametrize(
    ("row", "field", "reason"),
    [
        ({"prompt": "Q", "rejected": " no"}, "chosen", "missing"),
        ({"prompt": "Q", "chosen": None, "rejected": " no"}, "chosen", "missing"),
        ({"prompt": "Q", "chosen": " yes", "rejected": 3}, "rejected", "expected a string"),
        ({"prompt": "Q", "chosen": "   ", "rejected": ""}, "chosen", "both completions are empty"),
        ({"prompt": "", "chosen": " a", "rejected": " b"}, "prompt", "empty"),
        ({"chosen": "same text", "rejected": "same text"}, "rejected", "identical to chosen"),
        ({"chosen": "\n\nHuman: a\n\nAssistant:", "rejected": "\n\nHuman: a\n\nAssistant: "}, "chosen", "empty"),
    ],
)
def test_bad_rows_name_record_and_field(row, field, reason):
    with pytest.raises(PreferenceDataError, match=reason) as err:
        to_example(row, "data/train.jsonl:7")
    assert err.value.location == "data/train.jsonl:7" and err.value.field == field
    assert "data/train.jsonl:7" in str(err.value) and repr(field) in str(err.value)


# -- kinds, column mapping, system prompts --------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "kind"),
    [
        (InvalidJSON("invalid JSON (Expecting value at column 1)"), "invalid_json"),
        (["a", "b"], "not_a_record"),
        ({"prompt": "Q", "chosen": " a"}, "missing_field"),
        ({"prompt": "Q", "chosen": " a", "rejected": None}, "missing_field"),
        ({"prompt": 3, "chosen": " a", "rejected": " b"}, "not_a_string"),
        ({"prompt": " ", "chosen": " a", "rejected": " b"}, "empty_prompt"),
        ({"prompt": "Q", "chosen": "", "rejected": " "}, "empty_completion"),
        ({"prompt": "Q", "chosen": " a", "rejected": " a"}, "identical"),
    ],
)
def test_every_bad_record_has_a_kind(row, kind):
    with pytest.raises(PreferenceDataError) as err:
        to_example(row, "f.jsonl:3")
    assert err.value.kind == kind and kind in BAD_RECORD_KINDS


def test_column_mapping_names_the_data_s_own_column():
    columns = {"prompt": "question", "chosen": "good", "rejected": "bad"}
    row = {"question": "Q?", "good": " yes", "bad": " no"}
    assert to_example(row, "x", columns) == PreferenceExample("Q?", " yes", " no")
    with pytest.raises(PreferenceDataError, match="field 'bad'"):
        to_example({"question": "Q?", "good": " yes"}, "x", columns)
    with pytest.raises(ValueError, match="unknown roles"):
        check_columns({"answer": "a"})


def test_system_prompt_goes_before_text_prompts():
    row = {"prompt": "\n\nHuman: hi\n\nAssistant:", "chosen": " hello", "rejected": " go"}
    assert to_example(row, "x", system_prompt="Be kind.").prompt == "Be kind.\n\nHuman: hi\n\nAssistant:"


# -- conversations ---------------------------------------------------------------------------------------

U1, A1 = {"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}
U2 = {"role": "user", "content": "Capital of France?"}
GOOD, BAD = {"role": "assistant", "content": "Paris."}, {"role": "assistant", "content": "Dunno."}


def test_explicit_conversational_prompt():
    row = {"prompt": [U1, A1, U2], "chosen": [GOOD], "rejected": [BAD]}
    assert to_example(row, "x") == ChatExample([U1, A1, U2], [GOOD], [BAD])


def test_full_conversations_share_their_earlier_turns():
    row = {"chosen": [U1, A1, U2, GOOD], "rejected": [U1, A1, U2, BAD]}
    assert to_example(row, "x") == ChatExample([U1, A1, U2], [GOOD], [BAD])
    # UltraFeedback-binarized: a prompt string beside full conversations that repeat it.
    row = {"prompt": "Capital of France?", "chosen": [U2, GOOD], "rejected": [U2, BAD]}
    assert to_example(row, "x") == ChatExample([U2], [GOOD], [BAD])
    # An explicit prompt list that the conversations repeat is taken off them.
    row = {"prompt": [U2], "chosen": [U2, GOOD], "rejected": [U2, BAD]}
    assert to_example(row, "x") == ChatExample([U2], [GOOD], [BAD])


def test_a_prompt_string_with_assistant_only_completions():
    row = {"prompt": "Capital of France?", "chosen": [GOOD], "rejected": [BAD]}
    assert to_example(row, "x") == ChatExample([U2], [GOOD], [BAD])


def test_system_prompt_becomes_a_system_message_unless_there_is_one():
    row = {"prompt": [U2], "chosen": [GOOD], "rejected": [BAD]}
    assert to_example(row, "x", system_prompt="Be brief.").prompt == [{"role": "system", "content": "Be brief."}, U2]
    system = {"role": "system", "content": "Mine."}
    row = {"prompt": [system, U2], "chosen": [GOOD], "rejected": [BAD]}
    assert to_example(row, "x", system_prompt="Be brief.").prompt == [system, U2]


def test_arrow_null_keys_are_dropped_from_messages():
    row = {"prompt": [{**U2, "name": None}], "chosen": [GOOD], "rejected": [BAD]}
    assert to_example(row, "x").prompt == [U2]


@pytest.mark.parametrize(
    ("row", "field", "kind", "reason"),
    [
        ({"chosen": [U2, GOOD], "rejected": " Dunno."}, "rejected", "not_a_string", "list of messages"),
        ({"chosen": [U2, {"role": "assistant"}], "rejected": [U2, BAD]}, "chosen", "not_a_string", "content"),
        ({"chosen": [U2, "Paris"], "rejected": [U2, BAD]}, "chosen", "not_a_string", "message 1"),
        ({"chosen": [GOOD], "rejected": [BAD]}, "prompt", "empty_prompt", "share no earlier turn"),
        ({"prompt": [U2], "chosen": [], "rejected": [BAD]}, "chosen", "empty_completion", "empty"),
        (
            {"prompt": [U2], "chosen": [{"role": "assistant", "content": " "}], "rejected": [{**BAD, "content": ""}]},
            "chosen",
            "empty_completion",
            "both completions are empty",
        ),
        ({"chosen": [U1, A1, U2, GOOD], "rejected": [U1, A1]}, "rejected", "empty_completion", "empty"),
        ({"prompt": "Q", "chosen": [U1, GOOD], "rejected": [U2, BAD]}, "chosen", "not_a_string", "assistant message"),
        ({"prompt": [U2], "chosen": [GOOD], "rejected": [GOOD]}, "rejected", "identical", "identical"),
        ({"prompt": 5, "chosen": [GOOD], "rejected": [BAD]}, "prompt", "not_a_string", "string or a list"),
    ],
)
def test_bad_conversations(row, field, kind, reason):
    with pytest.raises(PreferenceDataError, match=reason) as err:
        to_example(row, "uf.parquet row 4")
    assert (err.value.field, err.value.kind) == (field, kind)
