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


def step_timer(
    times: list[float],
    tokens: list[int] | None = None,
    clock: Callable[[], float] = time.perf_counter,
    optimizer_times: list[float] | None = None,
):
    """A Lightning callback that appends each training step's seconds to ``times`` and, when given, its
    non-padding tokens to ``tokens`` and the seconds of its optimizer step (from ``on_before_optimizer_step``
    to the end of the batch) to ``optimizer_times``. ``clock`` may synchronise a GPU before reading the time."""
    from lightning_dpo.namespace import pl

    class StepTimer(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            self.start = self.optimizer_start = clock()

        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            self.optimizer_start = clock()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            end = clock()
            times.append(end - self.start)
            if optimizer_times is not None:
                optimizer_times.append(end - self.optimizer_start)
            if tokens is not None:
                tokens.append(int(batch["attention_mask"].sum()))

    return StepTimer()


def wait_for_quiet(threshold: float = 0.15, window: float = 2.0, max_wait: float = 300.0) -> float:
    """Wait (up to ``max_wait`` s) until the machine's CPUs are busy less than ``threshold`` of the time over
    ``window`` seconds, so that a measurement does not start while other work runs; return the busy share
    last seen. Other people's processes on a shared machine are the noise this guards against."""
    import psutil

    deadline = time.monotonic() + max_wait
    while True:
        busy = psutil.cpu_percent(interval=window) / 100
        if busy < threshold or time.monotonic() > deadline:
            return busy


class ForeignCpu:
    """CPU-seconds used on this machine by processes other than this one and its children, between
    ``start()`` and ``stop()``: how much a measurement shared the cores."""

    def start(self) -> None:
        import psutil

        self._busy = _busy_seconds(psutil.cpu_times())
        self._own = _own_seconds()
        self._wall = time.monotonic()

    def stop(self) -> dict[str, float]:
        import psutil

        busy = _busy_seconds(psutil.cpu_times()) - self._busy
        own = _own_seconds() - self._own
        wall = time.monotonic() - self._wall
        foreign = max(0.0, busy - own)
        return {
            "foreign_cpu_s": foreign,
            "wall_s": wall,
            "foreign_share": foreign / max(wall * psutil.cpu_count(), 1e-9),
        }


def _busy_seconds(times: Any) -> float:
    return times.user + times.nice + times.system + getattr(times, "irq", 0) + getattr(times, "softirq", 0)


def _own_seconds() -> float:
    import resource

    usage = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    return sum(u.ru_utime + u.ru_stime for u in usage)
