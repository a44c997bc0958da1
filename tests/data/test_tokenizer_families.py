"""Token for token with the whole text, for every tokenizer family: byte-level BPE (GPT-2 / Llama-3 layout),
the SentencePiece layout (Llama-2 / Mistral / Gemma-1 ``tokenizer.json``), and prompts that end in whitespace.

The tokenizers are trained here, on HH-shaped transcripts from ``scripts/make_hh_shaped_data.py``."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from lightning_dpo.data.formats import ChatExample, PreferenceExample, to_example
from lightning_dpo.data.tokenize import tokenize_example
from lightning_dpo.data.truncation import TokenSettings

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make_hh_shaped_data.py"
WHOLE = TokenSettings(max_length=10**6)


@pytest.fixture(scope="module")
def hh():
    spec = importlib.util.spec_from_file_location("make_hh_shaped_data", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def tokenizers(hh):
    corpus = hh.corpus(hh.hh_shaped_pairs(300, seed=1))
    return {family: hh.train_tokenizer(family, corpus, vocab_size=800) for family in hh.FAMILIES}


@pytest.fixture(scope="module")
def records(hh):
    rows = hh.hh_shaped_pairs(60, seed=7, n_empty_chosen=3)
    return {"hh": rows, "whitespace": hh.whitespace_ended(rows)}


def test_the_sentencepiece_layout_is_what_the_issue_describes(tokenizers):
    sp = tokenizers["sentencepiece"]
    assert sp.convert_ids_to_tokens(sp(" I think", add_special_tokens=False)["input_ids"]) == ["▁", "▁I", "▁think"]
    assert sp.convert_ids_to_tokens(sp("I think", add_special_tokens=False)["input_ids"]) == ["▁I", "▁think"]
    byte = tokenizers["byte_bpe"]
    assert byte.convert_ids_to_tokens(byte(" I think", add_special_tokens=False)["input_ids"]) == ["ĠI", "Ġthink"]


@pytest.mark.parametrize("prompts", ["hh", "whitespace"])
@pytest.mark.parametrize("family", ["byte_bpe", "sentencepiece"])
def test_prompt_and_completion_ids_are_the_whole_text_s(family, prompts, tokenizers, records):
    tokenizer = tokenizers[family]
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    examples = [to_example(row, f"hh:{i}") for i, row in enumerate(records[prompts])]
    if prompts == "whitespace":
        assert all(e.prompt.endswith("Assistant: ") for e in examples)
    assert sum(not e.chosen for e in examples) == (3 if prompts == "hh" else 0)
    for example in examples:
        out = tokenize_example(example, tokenizer, WHOLE)
        prompt = out["prompt_input_ids"]
        assert prompt[0] == bos and prompt.count(bos) == 1
        for side in ("chosen", "rejected"):
            completion = out[f"{side}_input_ids"]
            whole = tokenizer(example.prompt + getattr(example, side))["input_ids"] + [eos]
            assert prompt + completion == whole, (family, prompts, example.prompt[-30:], getattr(example, side)[:30])
            assert completion.count(eos) == 1 and completion[-1] == eos
            assert completion[0] == whole[len(prompt)]  # no completion starts with a token the text does not have
            if not getattr(example, side):
                assert completion == [eos]  # saying nothing: the EOS alone


def test_the_old_separate_tokenization_differs_where_the_issue_says(tokenizers, records):
    """The cases above can fail: tokenising prompt and completion apart breaks both families' whole text."""
    cases = {
        ("sentencepiece", "hh"): tokenizers["sentencepiece"],
        ("byte_bpe", "whitespace"): tokenizers["byte_bpe"],
        ("byte_bpe", "hh"): tokenizers["byte_bpe"],
    }
    for (family, prompts), tokenizer in cases.items():
        differ = 0
        for i, row in enumerate(records[prompts]):
            example = to_example(row, f"hh:{i}")
            if not example.chosen:
                continue
            apart = (
                tokenizer(example.prompt)["input_ids"]
                + tokenizer(example.chosen, add_special_tokens=False)["input_ids"]
            )
            differ += apart != tokenizer(example.prompt + example.chosen)["input_ids"]
        answered = sum(bool(to_example(row, "x").chosen) for row in records[prompts])
        if (family, prompts) == ("byte_bpe", "hh"):
            assert differ == 0  # spaces at token starts: the seam is a token boundary anyway
        else:
            assert differ >= 0.9 * answered, (family, prompts, differ, answered)


@pytest.mark.parametrize("family", ["byte_bpe", "sentencepiece"])
def test_a_chat_template_whose_generation_prompt_ends_in_a_space(family, tokenizers):
    """The template path splits by the same rule: "Assistant: " + "Paris" is tokenised as one text."""
    tokenizer = tokenizers[family]
    template = (
        "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'user' %}Human: {{ m['content'] }}\n"
        "{% else %}Assistant: {{ m['content'] }}{{ eos_token }}\n{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}Assistant: {% endif %}"
    )
    example = ChatExample(
        [{"role": "user", "content": "Where is the city?"}],
        [{"role": "assistant", "content": "I think it is here."}],
        [{"role": "assistant", "content": "No."}],
    )
    out = tokenize_example(example, tokenizer, TokenSettings(max_length=512, chat_template=template))
    for side in ("chosen", "rejected"):
        text = tokenizer.apply_chat_template(
            example.prompt + getattr(example, side), chat_template=template, tokenize=False
        )
        whole = tokenizer(text, add_special_tokens=False)["input_ids"]
        completion = out[f"{side}_input_ids"]
        assert out["prompt_input_ids"] + completion == whole[: len(out["prompt_input_ids"]) + len(completion)]
        assert completion[-1] == tokenizer.eos_token_id and completion.count(tokenizer.eos_token_id) == 1
        assert tokenizer.decode(out["prompt_input_ids"], skip_special_tokens=True).rstrip().endswith("Assistant:")
    assert tokenizer.convert_ids_to_tokens(out["chosen_input_ids"][0]) in ("ĠI", "▁I")


def test_chosen_and_rejected_share_one_prompt_where_one_of_them_merges(tokenizers):
    """Only the chosen completion merges with the prompt's last word ("kit" + "chen" is the one token
    "Ġkitchen"): the shared prompt is the common prefix, and both completions start there."""
    tokenizer = tokenizers["byte_bpe"]
    example = PreferenceExample("\n\nHuman: Where?\n\nAssistant: kit", "chen is here.", " no.")
    out = tokenize_example(example, tokenizer, WHOLE)
    for side in ("chosen", "rejected"):
        whole = tokenizer(example.prompt + getattr(example, side))["input_ids"] + [tokenizer.eos_token_id]
        assert out["prompt_input_ids"] + out[f"{side}_input_ids"] == whole
    assert tokenizer.decode(out["prompt_input_ids"], skip_special_tokens=True).endswith("Assistant:")
    assert tokenizer.convert_ids_to_tokens(out["chosen_input_ids"][0]) == "Ġkitchen"
    assert tokenizer.decode(out["rejected_input_ids"], skip_special_tokens=True) == " kit no."
