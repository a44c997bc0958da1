"""The on-disk cache of tokenised splits.

    <cache_dir>/<key>/data/          datasets.save_to_disk of the split's tokens (memory-mapped on load)
    <cache_dir>/<key>/report.json    the tally of records read and dropped, and what made the key

The key is a hash of everything that changes the tokens: the data (file bytes, or a Hub split's
fingerprint) and its column mapping, the tokenizer (vocabulary, merges, special tokens, how it adds them,
its chat template), the chat template in use, the system prompt, the lengths and the truncation mode,
and ``CACHE_VERSION`` of this code. A directory appears under its key only when complete (written beside
it, then renamed), so concurrent writers on a shared disk cannot leave a half-written split behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
import warnings
from pathlib import Path
from typing import Any

import datasets
from transformers import PreTrainedTokenizerBase

CACHE_VERSION = 3
"""Bump when a change to this package changes the tokens it produces from the same inputs."""


def tokenizer_fingerprint(tokenizer: PreTrainedTokenizerBase) -> str:
    """A hash of what makes a tokenizer's ids: its full serialisation (or vocabulary), special tokens, the
    ids it adds around a probe text, and its chat template."""
    digest = hashlib.sha256(type(tokenizer).__name__.encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        digest.update(backend.to_str().encode())
    else:
        digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    probe = "Hello world.\n"
    digest.update(
        json.dumps(
            {
                "special": [tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id],
                "added": sorted((str(k), str(v)) for k, v in getattr(tokenizer, "added_tokens_decoder", {}).items()),
                "probe": [tokenizer(probe)["input_ids"], tokenizer(probe, add_special_tokens=False)["input_ids"]],
                "chat_template": getattr(tokenizer, "chat_template", None),
            },
            sort_keys=True,
            default=str,
        ).encode()
    )
    return digest.hexdigest()


def cache_key(parts: dict[str, Any]) -> str:
    """A short hash of JSON-able ``parts`` (plus ``CACHE_VERSION``)."""
    text = json.dumps({"version": CACHE_VERSION, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def load(cache_dir: str, key: str) -> tuple[datasets.Dataset, dict[str, Any]] | None:
    """The cached split and its tally, or None when absent."""
    path = Path(cache_dir).expanduser() / key
    if not (path / "report.json").is_file():
        return None
    with open(path / "report.json", encoding="utf-8") as f:
        report = json.load(f)
    return datasets.load_from_disk(str(path / "data")), report["tally"]


def save(cache_dir: str, key: str, data: datasets.Dataset, tally: dict[str, Any], parts: dict[str, Any]) -> bool:
    """Write a split under ``key``; warn and return False when the cache directory is not writable."""
    root = Path(cache_dir).expanduser()
    final = root / key
    staging = root / f".{key}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        root.mkdir(parents=True, exist_ok=True)
        data.save_to_disk(str(staging / "data"))
        with open(staging / "report.json", "w", encoding="utf-8") as f:
            json.dump({"tally": tally, "key_parts": parts}, f, indent=1, default=str)
        try:
            os.rename(staging, final)
        except OSError:  # another process finished the same key first: theirs is as good
            shutil.rmtree(staging, ignore_errors=True)
        return True
    except OSError as e:
        shutil.rmtree(staging, ignore_errors=True)
        warnings.warn(f"could not write the tokenised data cache in {root} ({e}); set data.cache_dir", stacklevel=2)
        return False
