"""Shared fixtures: tiny random models and small data files built locally (no network)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from lightning_dpo.embedded import DEFAULT_DATASET, DEFAULT_MODEL, resolve_dataset, resolve_model

# Tests never touch the network: fail fast instead of waiting on a Hub lookup.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


def _read_jsonl(path: Path, n: int) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for _, line in zip(range(n), f)]


@pytest.fixture(scope="session")
def embedded_model_dir() -> Path:
    return Path(resolve_model(DEFAULT_MODEL))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, embedded_model_dir) -> Path:
    """A randomly initialised 2-layer Llama (width 32) with the embedded tokenizer."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
        attention_dropout=0.1,  # so that tests see disable_dropout at work
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    path = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory) -> Path:
    """A small train/val split of the bundled data, as a directory of jsonl files."""
    source = Path(resolve_dataset(DEFAULT_DATASET))
    path = tmp_path_factory.mktemp("tiny-data")
    for split, n in (("train", 48), ("val", 16)):
        with open(path / f"{split}.jsonl", "w", encoding="utf-8") as f:
            for row in _read_jsonl(source / f"{split}.jsonl", n):
                f.write(json.dumps(row) + "\n")
    return path


@pytest.fixture(autouse=True, scope="session")
def _private_caches(tmp_path_factory):
    """Token and reference-log-prob caches go to a per-session temporary directory, never to ~/.cache."""
    os.environ.setdefault("LIGHTNING_DPO_CACHE", str(tmp_path_factory.mktemp("lightning_dpo_cache")))
