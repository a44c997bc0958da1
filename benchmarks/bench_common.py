"""Pieces shared by the benchmarks (they import this from their own folder)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def save_random_model(path: Path, make_config: Callable[[Any], Any], dtype: Any = None) -> int:
    """Save a causal LM with random weights (seed 0) from ``make_config(tokenizer)``, with the bundled
    1,024-token tokenizer, whose ids are in range of any larger vocabulary; return its parameter count."""
    import torch
    from transformers import AutoModelForCausalLM

    from lightning_dpo.embedded import DEFAULT_MODEL
    from lightning_dpo.models import load_tokenizer

    tokenizer = load_tokenizer(DEFAULT_MODEL)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(make_config(tokenizer), dtype=dtype)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return sum(p.numel() for p in model.parameters())


def special_tokens(tokenizer: Any) -> dict[str, int]:
    """The config keys for the tokenizer's BOS, EOS and pad ids."""
    return {
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
    }


def step_timer(times: list[float], tokens: list[int] | None = None, clock: Callable[[], float] = time.perf_counter):
    """A Lightning callback that appends each training step's seconds to ``times`` and, when given, its
    non-padding tokens to ``tokens``. ``clock`` may synchronise a GPU before reading the time."""
    import pytorch_lightning as pl

    class StepTimer(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.start = clock()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            times.append(clock() - self.start)
            if tokens is not None:
                tokens.append(int(batch["attention_mask"].sum()))

    return StepTimer()
