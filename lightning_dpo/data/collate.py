"""Collating tokenized pairs into one concatenated, right-padded batch.

For B pairs the batch has N = 2B rows, chosen rows first (0..B-1) then rejected (B..2B-1), so both go
through the model in a single forward pass:

    input_ids        (2B, T)  long   prompt + completion, then pad_token_id
    attention_mask   (2B, T)  long   1 on prompt + completion tokens
    completion_mask  (2B, T)  long   1 on completion tokens only
    pair_index       (B,)     long   each pair's stable id, when the items carry one (``IndexedPairs``)

T is the longest row in this batch (dynamic padding), rounded up to ``pad_to_multiple_of``. The masks
come from lengths, never from comparing ids with the pad id, so a pad token equal to EOS is harmless.

Rankings (:class:`RankingCollator`: K completions per prompt, N = K·B rows, rank-major, with ``scores``) and
unpaired examples (:class:`UnpairedCollator`: each completion and a mismatched KL completion, N = 2B rows,
with ``desirable``) follow the same layout, one group of rows per prompt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class PreferenceCollator:
    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, pairs: Sequence[Mapping[str, Sequence[int]]]) -> dict[str, Tensor]:
        rows = [(p["prompt_input_ids"], p["chosen_input_ids"]) for p in pairs]
        rows += [(p["prompt_input_ids"], p["rejected_input_ids"]) for p in pairs]
        batch = pad_rows(rows, self.pad_token_id, self.pad_to_multiple_of)
        if pairs and "pair_index" in pairs[0]:
            batch["pair_index"] = torch.tensor([p["pair_index"] for p in pairs], dtype=torch.long)
        return batch


def pad_rows(rows: Sequence[tuple[Sequence[int], Sequence[int]]], pad_token_id: int, multiple: int | None) -> dict:
    """(prompt, completion) id rows -> right-padded ``input_ids``, ``attention_mask``, ``completion_mask``."""
    width = max(len(prompt) + len(completion) for prompt, completion in rows)
    if multiple:
        width = -(-width // multiple) * multiple
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    completion_mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (prompt, completion) in enumerate(rows):
        end = len(prompt) + len(completion)
        input_ids[i, :end] = torch.tensor([*prompt, *completion], dtype=torch.long)
        attention_mask[i, :end] = 1
        completion_mask[i, len(prompt) : end] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "completion_mask": completion_mask}


@dataclass
class RankingCollator:
    """Rankings of K completions per prompt -> one batch of N = K·B rows, rank-major: rows k·B + i hold prompt i
    with its k-th completion (best first, as the data module sorts them), so that K = 2 is exactly the pairwise
    layout (chosen rows, then rejected rows). Adds ``scores`` (B, K) float, and ``pair_index`` (B,) when the
    items carry one. Every item of a batch has the same K."""

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, items: Sequence[Mapping]) -> dict[str, Tensor]:
        k = len(items[0]["completions_input_ids"])
        if any(len(item["completions_input_ids"]) != k for item in items):
            raise ValueError(f"a rankings batch needs the same number of completions per prompt; the first has {k}")
        rows = [(item["prompt_input_ids"], item["completions_input_ids"][j]) for j in range(k) for item in items]
        batch = pad_rows(rows, self.pad_token_id, self.pad_to_multiple_of)
        batch["scores"] = torch.tensor([list(item["scores"]) for item in items], dtype=torch.float32)
        if "pair_index" in items[0]:
            batch["pair_index"] = torch.tensor([item["pair_index"] for item in items], dtype=torch.long)
        return batch


@dataclass
class UnpairedCollator:
    """Unpaired examples (KTO) -> one batch of N = 2B rows: rows i hold prompt i with its completion, rows B + i
    the same prompt with its mismatched KL completion (so both share the prompt, as a pair's rows do). Adds
    ``desirable`` (B,) bool, and ``pair_index`` (B,) when the items carry one."""

    pad_token_id: int
    pad_to_multiple_of: int | None = None

    def __call__(self, items: Sequence[Mapping]) -> dict[str, Tensor]:
        rows = [(item["prompt_input_ids"], item["completion_input_ids"]) for item in items]
        rows += [(item["prompt_input_ids"], item["kl_completion_input_ids"]) for item in items]
        batch = pad_rows(rows, self.pad_token_id, self.pad_to_multiple_of)
        batch["desirable"] = torch.tensor([bool(item["label"]) for item in items], dtype=torch.bool)
        if "pair_index" in items[0]:
            batch["pair_index"] = torch.tensor([item["pair_index"] for item in items], dtype=torch.long)
        return batch
