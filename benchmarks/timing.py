"""Per-step timing shared by the benchmarks (they import it from their own folder)."""

from __future__ import annotations

import time
from typing import Callable


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
