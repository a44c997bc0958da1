"""The on-disk cache of tokenised splits.

    <cache_dir>/<key>/data/          datasets.save_to_disk of the split's tokens (memory-mapped on load)
    <cache_dir>/<key>/report.json    the tally of records read and dropped, and what made the key
    <cache_dir>/<key>/manifest.json  the key, and every file's size and sha256 (written last)
    <cache_dir>/.locks/<key>.lock    held while a process builds the entry

The key is a hash of everything that changes the tokens: the data (file bytes, or a Hub split's
fingerprint) and its column mapping, the tokenizer (vocabulary, merges, special tokens, how it adds them,
its chat template), the chat template in use, the system prompt, the lengths and the truncation mode,
and ``CACHE_VERSION`` of this code. A directory appears under its key only when complete (written beside
it, then renamed), so concurrent writers on a shared disk cannot leave a half-written split behind; a
second process that wants the same key waits on its lock and loads the first one's entry. Every load
checks the manifest (``storage.verify_manifest``): a truncated, garbled or foreign entry is reported,
removed and rebuilt.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import datasets
from transformers import PreTrainedTokenizerBase

from lightning_dpo import storage

CACHE_VERSION = 2
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


ENTRY_LAYOUT = 2
"""Bump when the files of an entry change (2: ``manifest.json``), so that older entries are simply not found."""


def cache_key(parts: dict[str, Any]) -> str:
    """A short hash of JSON-able ``parts`` (plus ``CACHE_VERSION`` and ``ENTRY_LAYOUT``)."""
    text = json.dumps({"version": CACHE_VERSION, "layout": ENTRY_LAYOUT, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def load(cache_dir: str, key: str, discard_corrupt: bool = True) -> tuple[datasets.Dataset, dict[str, Any]] | None:
    """The cached split and its tally, or None when absent or unusable.

    An entry that fails its manifest check (truncated, garbled, foreign, half-written) is reported with a
    warning naming the file and why, removed (unless ``discard_corrupt`` is off, as in a dry run), and
    treated as absent, so the caller rebuilds it: a bad cache is never trained on.
    """
    path = Path(cache_dir).expanduser() / key
    if not path.exists():
        return None
    try:
        storage.verify_manifest(path, key)
        report = json.loads((path / "report.json").read_bytes())
        return datasets.load_from_disk(str(path / "data")), report["tally"]
    except storage.CorruptFile as e:
        problem = f"{e.path}: {e.reason}"
    except (OSError, ValueError, KeyError, TypeError) as e:  # passed its checksums, yet does not load
        problem = f"{path}: {type(e).__name__}: {e}"
    action = "removed it; rebuilding" if discard_corrupt else "not using it"
    warnings.warn(f"the tokenised-data cache entry is unusable ({problem}); {action}", stacklevel=2)
    if discard_corrupt:
        storage.discard(path)
    return None


def save(cache_dir: str, key: str, data: datasets.Dataset, tally: dict[str, Any], parts: dict[str, Any]) -> bool:
    """Write a split under ``key`` (staged, checksummed, then renamed into place); warn and return False when
    the cache directory is not writable. Another process that published the same key first wins: its
    entry holds the same tokens."""
    root = Path(cache_dir).expanduser()
    final = root / key
    staging = storage.staging_path(final)
    try:
        root.mkdir(parents=True, exist_ok=True)
        data.save_to_disk(str(staging / "data"))
        storage.atomic_write(
            staging / "report.json", json.dumps({"tally": tally, "key_parts": parts}, indent=1, default=str).encode()
        )
        storage.write_manifest(staging, key)  # last: an entry without one is incomplete
        storage.publish_directory(staging, final)
        return True
    except OSError as e:
        shutil.rmtree(staging, ignore_errors=True)
        warnings.warn(f"could not write the tokenised data cache in {root} ({e}); set data.cache_dir", stacklevel=2)
        return False


def lock(cache_dir: str, key: str) -> AbstractContextManager[bool]:
    """The lock that makes a second process building ``key`` wait for the first and then load its result."""
    return storage.build_lock(Path(cache_dir).expanduser() / ".locks" / f"{key}.lock")
