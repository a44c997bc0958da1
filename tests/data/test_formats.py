"""Row formats: standard and implicit-prompt (HH-RLHF) rows, and bad records."""

import pytest

from lightning_dpo.data.formats import PreferenceExample, split_implicit_prompt, to_example
from lightning_dpo.data.sources import PreferenceDataError


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


@pytest.mark.parametrize(
    ("row", "field", "reason"),
    [
        ({"prompt": "Q", "rejected": " no"}, "chosen", "missing"),
        ({"prompt": "Q", "chosen": None, "rejected": " no"}, "chosen", "missing"),
        ({"prompt": "Q", "chosen": " yes", "rejected": 3}, "rejected", "expected a string"),
        ({"prompt": "Q", "chosen": "   ", "rejected": " no"}, "chosen", "empty"),
        ({"prompt": "", "chosen": " a", "rejected": " b"}, "prompt", "empty"),
        ({"chosen": "same text", "rejected": "same text"}, "rejected", "identical to chosen"),
        ({"chosen": "\n\nHuman: a\n\nAssistant:", "rejected": "\n\nHuman: a\n\nAssistant: b"}, "chosen", "empty"),
    ],
)
def test_bad_rows_name_record_and_field(row, field, reason):
    with pytest.raises(PreferenceDataError, match=reason) as err:
        to_example(row, "data/train.jsonl:7")
    assert err.value.location == "data/train.jsonl:7" and err.value.field == field
    assert "data/train.jsonl:7" in str(err.value) and repr(field) in str(err.value)
