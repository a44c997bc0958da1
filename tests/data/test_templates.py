"""Golden tests: conversations through a chat template that adds BOS and one that does not."""

import pytest
from transformers import AutoTokenizer

from lightning_dpo.data.formats import ChatExample, PreferenceExample, to_example
from lightning_dpo.data.sources import PreferenceDataError
from lightning_dpo.data.templates import encode_chats, end_at_eos, resolve_chat_template
from lightning_dpo.data.tokenize import tokenize_example
from lightning_dpo.data.truncation import EncodingProblem, TokenSettings

USER = {"role": "user", "content": "Hi there"}
EXAMPLE = ChatExample(
    [USER], [{"role": "assistant", "content": "Hello!"}], [{"role": "assistant", "content": "Go away."}]
)


@pytest.fixture(scope="module")
def bos_tok(bos_chat_tokenizer_dir):
    return AutoTokenizer.from_pretrained(bos_chat_tokenizer_dir)


@pytest.fixture(scope="module")
def plain_tok(plain_chat_tokenizer_dir):
    return AutoTokenizer.from_pretrained(plain_chat_tokenizer_dir)


def decoded(tokenizer, out):
    return [tokenizer.decode(out[k]) for k in ("prompt_input_ids", "chosen_input_ids", "rejected_input_ids")]


def test_template_with_bos_and_eos_closing_turns(bos_tok):
    out = tokenize_example(EXAMPLE, bos_tok, TokenSettings(max_length=64))
    assert decoded(bos_tok, out) == ["<s><|user|>\nHi there</s>\n<|assistant|>\n", "Hello!</s>", "Go away.</s>"]
    bos, eos = bos_tok.bos_token_id, bos_tok.eos_token_id
    assert out["prompt_input_ids"].count(bos) == 1 and out["prompt_input_ids"][0] == bos  # one BOS, first
    for side in ("chosen_input_ids", "rejected_input_ids"):
        assert out[side].count(eos) == 1 and out[side][-1] == eos  # the template's EOS; its "\n" after is cut
    # The completion is exactly the difference between the full and the prompt tokenisations.
    full = bos_tok.apply_chat_template(EXAMPLE.prompt + EXAMPLE.chosen, tokenize=True, return_dict=False)
    prompt, chosen = out["prompt_input_ids"], out["chosen_input_ids"]
    assert full[: len(prompt)] == prompt and full[len(prompt) : len(prompt) + len(chosen)] == chosen
    assert bos_tok.decode(full[len(prompt) + len(chosen) :]) == "\n"


def test_template_without_bos_and_without_eos(plain_tok):
    out = tokenize_example(EXAMPLE, plain_tok, TokenSettings(max_length=64))
    assert decoded(plain_tok, out) == [
        "<|im_start|>user\nHi there<|im_end|>\n<|im_start|>assistant\n",
        "Hello!<|im_end|>\n</s>",  # the template's turn end, then one appended EOS
        "Go away.<|im_end|>\n</s>",
    ]
    assert plain_tok.bos_token_id not in out["prompt_input_ids"]  # the template adds none, and neither do we
    for side in ("chosen_input_ids", "rejected_input_ids"):
        assert out[side].count(plain_tok.eos_token_id) == 1


def test_system_turn_and_multi_turn_prompt(bos_tok):
    example = ChatExample(
        [
            {"role": "system", "content": "Be kind."},
            USER,
            {"role": "assistant", "content": "Hi!"},
            {"role": "user", "content": "Help?"},
        ],
        [{"role": "assistant", "content": "Sure."}],
        [{"role": "assistant", "content": "No."}],
    )
    prompt, chosen, _ = decoded(bos_tok, tokenize_example(example, bos_tok, TokenSettings(max_length=128)))
    assert prompt == (
        "<s><|system|>\nBe kind.</s>\n<|user|>\nHi there</s>\n<|assistant|>\nHi!</s>\n<|user|>\nHelp?</s>\n"
        "<|assistant|>\n"
    )
    assert chosen == "Sure.</s>"


def test_text_examples_keep_one_bos_and_one_eos(bos_tok):
    out = tokenize_example(PreferenceExample("<s>Q: hi", " yes</s>", " no"), bos_tok, TokenSettings(max_length=64))
    assert out["prompt_input_ids"].count(bos_tok.bos_token_id) == 1
    assert decoded(bos_tok, out)[1:] == [" yes</s>", " no</s>"]


def test_a_template_that_renders_the_prompt_differently_is_a_bad_record(bos_tok):
    # Like templates that add an empty thinking block only to the generation prompt.
    template = bos_tok.chat_template.replace("<|assistant|>\n{% endif %}", "<|assistant|>\n<think></think>{% endif %}")
    (problem,) = encode_chats([EXAMPLE], bos_tok, template)
    assert isinstance(problem, EncodingProblem) and problem.kind == "template_mismatch"
    assert "not a prefix" in problem.message and "data.chat_template" in problem.message
    with pytest.raises(PreferenceDataError, match="not a prefix") as err:
        tokenize_example(EXAMPLE, bos_tok, TokenSettings(64, chat_template=template))
    assert err.value.kind == "template_mismatch"


def test_a_template_that_refuses_a_conversation_is_a_bad_record(bos_tok):
    template = "{% if messages[0]['role'] != 'system' %}{{ raise_exception('needs a system turn') }}{% endif %}" + (
        bos_tok.chat_template
    )
    (problem,) = encode_chats([EXAMPLE], bos_tok, template)
    assert problem.kind == "template_error" and "needs a system turn" in problem.message


def test_no_template_is_a_setting_error(embedded_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir)
    with pytest.raises(ValueError, match="data.chat_template"):
        encode_chats([EXAMPLE], tokenizer)


def test_end_at_eos():
    assert end_at_eos([5, 6, 2, 9], eos=2) == [5, 6, 2]
    assert end_at_eos([5, 2, 6, 2, 9], eos=2) == [5, 2, 6, 2]  # multi-turn completions keep inner turns
    assert end_at_eos([5, 6], eos=2) == [5, 6, 2]


def test_chat_template_from_a_file(tmp_path):
    (tmp_path / "t.jinja").write_text("{{ messages }}")
    assert resolve_chat_template(str(tmp_path / "t.jinja")) == "{{ messages }}"
    assert resolve_chat_template("{{ messages }}") == "{{ messages }}"
    assert resolve_chat_template(None) is None


# -- every row format, end to end, through both tokenizers ----------------------------------------------

Q = {"role": "user", "content": "Capital?"}
ROWS = {
    "standard": {"prompt": "\n\nHuman: Capital?\n\nAssistant:", "chosen": " Paris.", "rejected": " Rome."},
    "implicit": {
        "chosen": "\n\nHuman: Capital?\n\nAssistant: Paris.",
        "rejected": "\n\nHuman: Capital?\n\nAssistant: Rome.",
    },
    "messages": {
        "prompt": [Q],
        "chosen": [{"role": "assistant", "content": "Paris."}],
        "rejected": [{"role": "assistant", "content": "Rome."}],
    },
    "shared turns": {
        "chosen": [Q, {"role": "assistant", "content": "Paris."}],
        "rejected": [Q, {"role": "assistant", "content": "Rome."}],
    },
    "prompt string": {
        "prompt": "Capital?",
        "chosen": [{"role": "assistant", "content": "Paris."}],
        "rejected": [{"role": "assistant", "content": "Rome."}],
    },
}
TEXT = ["<s>\n\nHuman: Capital?\n\nAssistant:", " Paris.</s>", " Rome.</s>"]
GOLDEN = {
    "bos": {"text": TEXT, "chat": ["<s><|user|>\nCapital?</s>\n<|assistant|>\n", "Paris.</s>", "Rome.</s>"]},
    "plain": {
        "text": TEXT,
        "chat": [
            "<|im_start|>user\nCapital?<|im_end|>\n<|im_start|>assistant\n",
            "Paris.<|im_end|>\n</s>",
            "Rome.<|im_end|>\n</s>",
        ],
    },
}


@pytest.mark.parametrize("template", ["bos", "plain"])
@pytest.mark.parametrize("fmt", list(ROWS))
def test_golden_tokens_for_every_format(fmt, template, bos_tok, plain_tok):
    tokenizer = bos_tok if template == "bos" else plain_tok
    out = tokenize_example(to_example(ROWS[fmt], "golden"), tokenizer, TokenSettings(max_length=64))
    kind = "text" if fmt in ("standard", "implicit") else "chat"
    assert decoded(tokenizer, out) == GOLDEN[template][kind]
    assert out["prompt_input_ids"].count(tokenizer.bos_token_id) == (0 if (template, kind) == ("plain", "chat") else 1)
    assert [out[k].count(tokenizer.eos_token_id) for k in ("chosen_input_ids", "rejected_input_ids")] == [1, 1]
