"""Collating tokenized pairs into one concatenated, right-padded batch.

For B pairs the batch has N = 2B rows, chosen rows first (0..B-1) then rejected (B..2B-1), so both go
through the model in a single forward pass:

    input_ids        (2B, T)  long   prompt + completion, then pad_token_id
    attention_mask   (2B, T)  long   1 on prompt + completion tokens
    completion_mask  (2B, T)  long   1 on completion tokens only
    pair_index       (B,)     long   each pair's stable id, when the items carry one (``IndexedPairs``)

T is the longest row in this batch (dynamic padding), rounded up to ``pad_to_multiple_of``. The masks
come from lengths, never from comparing ids with the pad id, so a pad token equal to EOS is harmless.
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
        width = max(len(prompt) + len(completion) for prompt, completion in rows)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of

        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        completion_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (prompt, completion) in enumerate(rows):
            end = len(prompt) + len(completion)
            input_ids[i, :end] = torch.tensor([*prompt, *completion], dtype=torch.long)
            attention_mask[i, :end] = 1
            completion_mask[i, len(prompt) : end] = 1
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "completion_mask": completion_mask}
        if pairs and "pair_index" in pairs[0]:
            batch["pair_index"] = torch.tensor([p["pair_index"] for p in pairs], dtype=torch.long)
        return batch
