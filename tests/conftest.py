"""Shared fixtures: tiny random models and small data files built locally (no network), and the data
module, Trainer and script loader that many tests build the same way."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

# The suite runs on one namespace, pytorch_lightning unless LIGHTNING_DPO_NAMESPACE says otherwise, whatever a
# plugin imports first (set before lightning_dpo is imported); tests/namespaces runs a user's scripts under both.
os.environ.setdefault("LIGHTNING_DPO_NAMESPACE", "pytorch_lightning")

import pytest  # noqa: E402
import torch  # noqa: E402

from lightning_dpo.embedded import DEFAULT_DATASET, DEFAULT_MODEL, resolve_dataset, resolve_model  # noqa: E402

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
def tiny_reward_model_dir(tmp_path_factory, embedded_model_dir) -> Path:
    """A randomly initialised 1-layer Llama sequence classifier (one label) with the embedded tokenizer: an
    ``hf:`` reward model whose scores are real-valued and distinct."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
        num_labels=1,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-reward-model")
    LlamaForSequenceClassification(config).save_pretrained(path)
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


REPO = Path(__file__).resolve().parents[1]

QUIET_TRAINER = dict(
    accelerator="cpu",
    devices=1,
    logger=False,
    enable_progress_bar=False,
    enable_model_summary=False,
    enable_checkpointing=False,
    num_sanity_val_steps=0,
    limit_val_batches=0,
)
"""A CPU Trainer that writes nothing and validates nothing unless a test asks for it."""


@pytest.fixture
def make_data(tiny_data_dir, tiny_model_dir):
    """``make_data(model_dir=None, **overrides)``: a PreferenceDataModule over ``tiny_data_dir`` with the tiny
    model's tokenizer (or ``model_dir``'s): 4 pairs a batch, ``max_length`` 96, ``max_prompt_length`` 48."""
    from lightning_dpo import PreferenceDataModule

    def make(model_dir=None, **overrides):
        kwargs = {"batch_size": 4, "max_length": 96, "max_prompt_length": 48, **overrides}
        tokenizer = str(model_dir or tiny_model_dir)
        return PreferenceDataModule(dataset=str(tiny_data_dir), tokenizer_name_or_path=tokenizer, **kwargs)

    return make


@pytest.fixture
def train_batch(make_data) -> dict[str, torch.Tensor]:
    """The first training batch of ``make_data()``: 4 pairs, chosen rows then rejected (data/collate.py)."""
    data = make_data()
    data.setup("fit")
    return next(iter(data.train_dataloader()))


@pytest.fixture
def make_trainer(tmp_path):
    """``make_trainer(**overrides)``: a ``QUIET_TRAINER`` rooted in the test's ``tmp_path``."""
    from lightning_dpo.namespace import pl

    def make(**overrides):
        return pl.Trainer(**{**QUIET_TRAINER, "default_root_dir": tmp_path, **overrides})

    return make


@pytest.fixture
def load_script():
    """``load_script("scripts/gpu_check.py")``: a repository script as a module (scripts are not a package).
    The sibling modules it imported (``bench_common``) leave ``sys.modules`` afterwards."""
    folders: set[Path] = set()

    def load(relative_path: str):
        path = REPO / relative_path
        folders.add(path.parent)
        spec = importlib.util.spec_from_file_location(path.stem, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    yield load
    for name, module in list(sys.modules.items()):
        if Path(getattr(module, "__file__", None) or "/").parent in folders:
            sys.modules.pop(name)
