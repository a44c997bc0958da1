"""Tokenisation and truncation rules on a simple word-level tokenizer."""

import pytest

from lightning_dpo.data.formats import PreferenceExample
from lightning_dpo.data.sources import PreferenceDataError
from lightning_dpo.data.tokenize import tokenize_example
from lightning_dpo.data.truncation import Encoded, TokenSettings, truncate


class WordTokenizer:
    """Each space-separated word is one token; adds BOS (id 1) with special tokens, like Llama tokenizers.
    ``</s>`` is the EOS (id 2)."""

    bos_token_id, eos_token_id = 1, 2

    def __call__(self, text, add_special_tokens=True, verbose=True):
        if isinstance(text, list):
            return {"input_ids": [self(t, add_special_tokens)["input_ids"] for t in text]}
        ids = [self.eos_token_id if w == "</s>" else 10 + len(w) for w in text.split()]
        return {"input_ids": ([self.bos_token_id] if add_special_tokens else []) + ids}


def test_fits_and_ends_with_eos():
    out = tokenize_example(PreferenceExample("a bb", " ccc", " d ee"), WordTokenizer(), TokenSettings(max_length=10))
    assert out["prompt_input_ids"] == [1, 11, 12]
    assert out["chosen_input_ids"] == [13, 2] and out["rejected_input_ids"] == [11, 12, 2]
    assert not out["truncated"] and not out["dropped"]


def test_a_pair_that_fits_is_never_cut():
    out = tokenize_example(
        PreferenceExample("a bb ccc dddd", " x", " y"), WordTokenizer(), TokenSettings(10, max_prompt_length=3)
    )
    assert out["prompt_input_ids"] == [1, 11, 12, 13, 14] and not out["truncated"]  # longer than 3, but it fits


def test_prompt_loses_only_the_start_the_pair_needs_and_keeps_bos():
    out = tokenize_example(
        PreferenceExample("a bb ccc dddd", " x", " y"), WordTokenizer(), TokenSettings(6, max_prompt_length=3)
    )
    assert out["prompt_input_ids"] == [1, 12, 13, 14] and out["truncated"]  # one token over: "a" goes
    assert out["chosen_input_ids"] == [11, 2] and out["length"] == 6


def test_the_prompt_floor_comes_before_the_completion_end():
    encoded = Encoded([1, *range(20, 29)], [*range(30, 39), 2], [40, 2])  # prompt 10, chosen 10
    out = truncate(encoded, TokenSettings(max_length=12, max_prompt_length=4), bos_token_id=1)
    assert out["prompt_input_ids"] == [1, 26, 27, 28]  # cut to the floor (BOS + the last 3)
    assert out["chosen_input_ids"] == list(range(30, 38)) and out["rejected_input_ids"] == [40, 2]
    default = truncate(encoded, TokenSettings(max_length=12), bos_token_id=1)  # floor: half of max_length
    assert len(default["prompt_input_ids"]) == 6 and len(default["chosen_input_ids"]) == 6


def test_keep_end_never_cuts_a_token_the_pair_had_room_for():
    """Exhaustive over small sizes: a pair keeps min(max_length, its length) tokens of its longer row; the
    prompt keeps its end (and BOS), at least the floor; completions keep their starts."""
    for max_length in range(2, 9):
        for floor in (None, *range(1, max_length)):
            settings = TokenSettings(max_length, max_prompt_length=floor)
            for p in range(1, 9):
                for c in range(1, 9):
                    prompt, chosen, rejected = [1, *range(100, 99 + p)], list(range(200, 200 + c)), [300]
                    out = truncate(Encoded(prompt, chosen, rejected), settings, bos_token_id=1)
                    kept = out["prompt_input_ids"] + out["chosen_input_ids"]
                    assert len(kept) == min(max_length, p + c), (max_length, floor, p, c)
                    assert len(out["prompt_input_ids"]) >= min(p, settings.prompt_floor)
                    assert out["prompt_input_ids"][0] == 1 or len(out["prompt_input_ids"]) == 1
                    assert prompt[len(prompt) - len(out["prompt_input_ids"]) + 1 :] == out["prompt_input_ids"][1:]
                    assert out["chosen_input_ids"] == chosen[: len(out["chosen_input_ids"])]
                    assert out["truncated"] == (p + c > max_length) and not out["dropped"]


def test_lengths_that_leave_no_room_are_refused_up_front():
    with pytest.raises(ValueError, match=r"max_prompt_length \(8\).*\[1, 8\)"):
        TokenSettings(max_length=8, max_prompt_length=8)
    TokenSettings(max_length=8, max_prompt_length=8, truncation_mode="keep_start")  # not used there
    assert TokenSettings(max_length=256).prompt_floor == 128


def test_overflowing_completion_is_cut_at_end_without_eos():
    out = tokenize_example(PreferenceExample("a", " b cc ddd eeee", " f"), WordTokenizer(), TokenSettings(max_length=4))
    assert out["chosen_input_ids"] == [11, 12]  # room for 2 after [BOS, a]; no EOS
    assert out["rejected_input_ids"] == [11, 2]  # fits exactly, keeps its EOS
    assert out["truncated"] and not out["dropped"]


def test_no_room_for_a_completion_marks_the_pair_dropped():
    settings = TokenSettings(max_length=4, truncation_mode="keep_start")
    out = tokenize_example(PreferenceExample("a b c", " d", " e"), WordTokenizer(), settings)
    assert out["chosen_input_ids"] == [] and out["dropped"]


def test_bos_in_text_is_not_duplicated():
    class BosText(WordTokenizer):
        def __call__(self, text, add_special_tokens=True, verbose=True):
            if isinstance(text, list):
                return {"input_ids": [self(t, add_special_tokens)["input_ids"] for t in text]}
            out = super().__call__(text.replace("<s>", ""), add_special_tokens)
            if text.startswith("<s>"):
                out["input_ids"].insert(0, self.bos_token_id)
            return out

    out = tokenize_example(PreferenceExample("<s> a", " b", " c"), BosText(), TokenSettings(max_length=10))
    assert out["prompt_input_ids"] == [1, 11]


def test_eos_in_the_text_is_not_duplicated():
    out = tokenize_example(PreferenceExample("a", " b </s>", " c"), WordTokenizer(), TokenSettings(max_length=10))
    assert out["chosen_input_ids"] == [11, 2] and out["rejected_input_ids"] == [11, 2]


def test_an_eos_the_tokenizer_appends_is_left_off_the_prompt():
    class AddsEos(WordTokenizer):  # like add_eos_token=True
        def __call__(self, text, add_special_tokens=True, verbose=True):
            out = super().__call__(text, add_special_tokens)
            if add_special_tokens and not isinstance(text, list):
                out["input_ids"].append(self.eos_token_id)
            return out

    out = tokenize_example(PreferenceExample("a bb", " c", " d"), AddsEos(), TokenSettings(max_length=10))
    assert out["prompt_input_ids"] == [1, 11, 12]


def test_keep_start_cuts_the_sequence_end_and_ignores_max_prompt_length():
    encoded = Encoded([1, 11, 12, 13], [14, 15, 2], [16, 2])
    out = truncate(
        encoded, TokenSettings(max_length=6, max_prompt_length=2, truncation_mode="keep_start"), bos_token_id=1
    )
    assert out["prompt_input_ids"] == [1, 11, 12, 13]  # the prompt is not cut on its own
    assert out["chosen_input_ids"] == [14, 15] and out["rejected_input_ids"] == [16, 2]
    assert out["truncated"] and not out["dropped"] and out["length"] == 6
    keep_end = truncate(
        encoded, TokenSettings(max_length=6, max_prompt_length=2, truncation_mode="keep_end"), bos_token_id=1
    )
    assert keep_end["prompt_input_ids"] == [1, 12, 13] and keep_end["chosen_input_ids"] == [14, 15, 2]


def test_keep_start_drops_a_pair_whose_prompt_fills_max_length():
    out = truncate(
        Encoded([1, 11, 12, 13], [14, 2], [15, 2]), TokenSettings(max_length=4, truncation_mode="keep_start")
    )
    assert out["dropped"] and out["chosen_input_ids"] == []


def test_lengths_before_truncation_are_kept():
    out = truncate(Encoded([1, 11, 12], [13, 14, 15, 2], [16, 2]), TokenSettings(max_length=5))
    assert (out["prompt_length"], out["chosen_length"], out["rejected_length"]) == (3, 4, 2)
    assert out["length"] == 5 and out["prompt_input_ids"] == [11, 12] and out["chosen_input_ids"] == [13, 14, 15]


def test_words_that_merge_across_the_seam_belong_to_the_completions():
    # The word tokenizer joins "a" + "b" into one word "ab": the whole text is "x ab c", not "x a" + "b c".
    out = tokenize_example(PreferenceExample("x a", "b c", "d"), WordTokenizer(), TokenSettings(max_length=20))
    assert out["prompt_input_ids"] == [1, 11]  # "x": the shared prefix of both whole texts and the prompt
    assert out["chosen_input_ids"] == [12, 11, 2] and out["rejected_input_ids"] == [12, 2]  # "ab c", "ad"
    tokenizer = WordTokenizer()
    for completion in ("b c", "d"):
        whole = tokenizer("x a" + completion)["input_ids"] + [2]
        side = "chosen" if completion == "b c" else "rejected"
        assert out["prompt_input_ids"] + out[f"{side}_input_ids"] == whole


def test_a_prompt_that_merges_whole_into_the_completion_is_a_bad_record():
    class NoBos(WordTokenizer):
        def __call__(self, text, add_special_tokens=True, verbose=True):
            return super().__call__(text, add_special_tokens=False)

    with pytest.raises(PreferenceDataError, match="no prompt token is left") as err:
        tokenize_example(PreferenceExample("a", "b c", "d"), NoBos(), TokenSettings(max_length=20))
    assert err.value.kind == "empty_prompt"


def test_an_empty_completion_is_the_eos_alone():
    out = tokenize_example(PreferenceExample("a bb", "", " c"), WordTokenizer(), TokenSettings(max_length=10))
    assert out["prompt_input_ids"] == [1, 11, 12] and out["chosen_input_ids"] == [2]
    assert out["rejected_input_ids"] == [11, 2]
