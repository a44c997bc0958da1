"""Data-test fixtures: a private cache per test, and tiny tokenizers with chat templates of both kinds."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

# A template that starts with BOS and closes every turn with EOS, then a newline (Zephyr-like).
BOS_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{{ eos_token }}\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
# A template with no BOS whose turns end with a token that is not EOS (ChatML-like).
PLAIN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("LIGHTNING_DPO_CACHE", str(tmp_path_factory.mktemp("lightning_dpo_cache")))


def _save_tokenizer(path: Path, source: Path, template: str, extra_tokens: list[str]) -> Path:
    tokenizer = AutoTokenizer.from_pretrained(source)
    if extra_tokens:
        tokenizer.add_special_tokens({"additional_special_tokens": extra_tokens})
    tokenizer.chat_template = template
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def bos_chat_tokenizer_dir(tmp_path_factory, embedded_model_dir) -> Path:
    """The embedded tokenizer (BOS ``<s>``, EOS ``</s>``) with ``BOS_TEMPLATE``."""
    return _save_tokenizer(tmp_path_factory.mktemp("bos-chat"), embedded_model_dir, BOS_TEMPLATE, [])


@pytest.fixture(scope="session")
def plain_chat_tokenizer_dir(tmp_path_factory, embedded_model_dir) -> Path:
    """The embedded tokenizer with ``<|im_start|>``/``<|im_end|>`` added and ``PLAIN_TEMPLATE``."""
    return _save_tokenizer(
        tmp_path_factory.mktemp("plain-chat"), embedded_model_dir, PLAIN_TEMPLATE, ["<|im_start|>", "<|im_end|>"]
    )


def _write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def write_jsonl():
    """``write_jsonl(path, rows)``: rows as JSON lines; a row that is a str is written verbatim (malformed)."""
    return _write_jsonl
