"""Tokenisation and truncation rules on a simple word-level tokenizer."""

from lightning_dpo.data.formats import PreferenceExample
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


def test_prompt_keeps_last_tokens_and_bos():
    out = tokenize_example(
        PreferenceExample("a bb ccc dddd", " x", " y"), WordTokenizer(), TokenSettings(10, max_prompt_length=3)
    )
    assert out["prompt_input_ids"] == [1, 13, 14] and out["truncated"]


def test_overflowing_completion_is_cut_at_end_without_eos():
    out = tokenize_example(PreferenceExample("a", " b cc ddd eeee", " f"), WordTokenizer(), TokenSettings(max_length=4))
    assert out["chosen_input_ids"] == [11, 12]  # room for 2 after [BOS, a]; no EOS
    assert out["rejected_input_ids"] == [11, 2]  # fits exactly, keeps its EOS
    assert out["truncated"] and not out["dropped"]


def test_no_room_for_a_completion_marks_the_pair_dropped():
    out = tokenize_example(PreferenceExample("a b c", " d", " e"), WordTokenizer(), TokenSettings(max_length=4))
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
    assert keep_end["prompt_input_ids"] == [1, 13] and keep_end["chosen_input_ids"] == [14, 15, 2]


def test_keep_start_drops_a_pair_whose_prompt_fills_max_length():
    out = truncate(
        Encoded([1, 11, 12, 13], [14, 2], [15, 2]), TokenSettings(max_length=4, truncation_mode="keep_start")
    )
    assert out["dropped"] and out["chosen_input_ids"] == []


def test_lengths_before_truncation_are_kept():
    out = truncate(Encoded([1, 11, 12], [13, 14, 15, 2], [16, 2]), TokenSettings(max_length=5))
    assert (out["prompt_length"], out["chosen_length"], out["rejected_length"]) == (3, 4, 2)
    assert out["length"] == 5 and out["chosen_input_ids"] == [13, 14]
