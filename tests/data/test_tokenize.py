"""Tokenisation and truncation rules on a simple word-level tokenizer."""

from lightning_dpo.data.formats import PreferenceExample
from lightning_dpo.data.tokenize import tokenize_example


class WordTokenizer:
    """Each space-separated word is one token; adds BOS (id 1) with special tokens, like Llama tokenizers."""

    bos_token_id, eos_token_id = 1, 2

    def __call__(self, text, add_special_tokens=True):
        ids = [10 + len(w) for w in text.split()]
        return {"input_ids": ([self.bos_token_id] if add_special_tokens else []) + ids}


def test_fits_and_ends_with_eos():
    out = tokenize_example(PreferenceExample("a bb", " ccc", " d ee"), WordTokenizer(), max_length=10)
    assert out["prompt_input_ids"] == [1, 11, 12]
    assert out["chosen_input_ids"] == [13, 2] and out["rejected_input_ids"] == [11, 12, 2]
    assert not out["truncated"] and not out["dropped"]


def test_prompt_keeps_last_tokens_and_bos():
    out = tokenize_example(PreferenceExample("a bb ccc dddd", " x", " y"), WordTokenizer(), 10, max_prompt_length=3)
    assert out["prompt_input_ids"] == [1, 13, 14] and out["truncated"]


def test_overflowing_completion_is_cut_at_end_without_eos():
    out = tokenize_example(PreferenceExample("a", " b cc ddd eeee", " f"), WordTokenizer(), max_length=4)
    assert out["chosen_input_ids"] == [11, 12]  # room for 2 after [BOS, a]; no EOS
    assert out["rejected_input_ids"] == [11, 2]  # fits exactly, keeps its EOS
    assert out["truncated"] and not out["dropped"]


def test_no_room_for_a_completion_marks_the_pair_dropped():
    out = tokenize_example(PreferenceExample("a b c", " d", " e"), WordTokenizer(), max_length=4)
    assert out["chosen_input_ids"] == [] and out["dropped"]


def test_bos_in_text_is_not_duplicated():
    class BosText(WordTokenizer):
        def __call__(self, text, add_special_tokens=True):
            out = super().__call__(text.replace("<s>", ""), add_special_tokens)
            if text.startswith("<s>"):
                out["input_ids"].insert(0, self.bos_token_id)
            return out

    out = tokenize_example(PreferenceExample("<s> a", " b", " c"), BosText(), max_length=10)
    assert out["prompt_input_ids"] == [1, 11]
