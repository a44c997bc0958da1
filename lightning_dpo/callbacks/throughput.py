"""``ThroughputCallback``: tokens per second, model FLOPs per second and MFU of training, as users see them.

Each batch's FLOPs are counted exactly, from its layout (:func:`lightning_dpo.plan.step_flops`: every pair's
unique tokens, its prompt once; the LM head at completion tokens only; the policy's forward and backward, the
reference's forward when one runs), not as 6·N·tokens, which at Qwen2.5-0.5B's 152k vocabulary counts the
head at every prompt token and overstates a DPO step's work by ~40 %. MFU is given twice: the policy alone,
and including the reference's forward, each over the device's peak: on a GPU its datasheet dense bf16 rate
(:data:`PEAK_BF16_TFLOPS`), on a CPU a measured fp32 matmul rate (:func:`measure_matmul_peak`, once per
process), or ``peak_flops`` when given.

Lightning's ``ThroughputMonitor`` is not used: it takes one FLOP count per batch (here there are two), has no
peak for CPUs, and synchronises CUDA every batch; the windowed rate is the same idea.
"""

from __future__ import annotations

import functools
import time
from collections import deque
from typing import Any

import torch
from torch import Tensor

from lightning_dpo.namespace import pl
from lightning_dpo.plan import ModelDims, step_flops

PEAK_BF16_TFLOPS = {"H100 PCIe": 756.0, "H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "L4": 121.0}
"""Dense bf16 tensor-core TFLOPS from the datasheets, by device-name fragment (the first that matches)."""


def datasheet_peak(device_name: str) -> float | None:
    """FLOP/s of the GPU named ``device_name`` (``torch.cuda.get_device_name``), or ``None`` if unknown."""
    for key, value in PEAK_BF16_TFLOPS.items():
        if key.lower() in device_name.lower():
            return value * 1e12
    return None


@functools.cache
def measure_matmul_peak(size: int = 2048, seconds: float = 1.0, threads: int | None = None) -> float:
    """The CPU's fp32 matmul rate, FLOP/s: the best of repeated (size × size) @ (size × size) products over
    ``seconds``. Cached per process (and thread count): measured once, at the first fit."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up: threads, caches
    best, end = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < end:
        start = time.perf_counter()
        a @ b
        best = max(best, 2 * size**3 / (time.perf_counter() - start))
    return best


def device_peak(device: torch.device) -> float | None:
    """The peak MFU divides by on ``device``: datasheet bf16 on CUDA, a measured matmul rate on a CPU."""
    if device.type == "cuda":
        return datasheet_peak(torch.cuda.get_device_name(device))
    if device.type == "cpu":
        return measure_matmul_peak(threads=torch.get_num_threads())
    return None


def batch_pairs(batch: dict[str, Tensor]) -> list[tuple[int, int, int]]:
    """(prompt, chosen, rejected) token counts of each pair of a concatenated batch (chosen rows first)."""
    completion = batch["completion_mask"].sum(-1)
    prompt = batch["attention_mask"].sum(-1) - completion
    half = completion.shape[0] // 2
    rows = torch.stack([prompt[:half], completion[:half], completion[half:]], 1).tolist()
    return [tuple(int(x) for x in row) for row in rows]


class ThroughputCallback(pl.Callback):
    """Logs ``train/tokens_per_sec``, ``train/flops_per_sec`` (model FLOPs, reference forward included),
    ``train/mfu`` (the policy's forward and backward) and ``train/mfu_with_reference``, per device, over a
    sliding window of ``window`` batches (the optimizer step's time included). ``peak_flops``: the device's
    peak FLOP/s; ``None``: datasheet bf16 on known GPUs, a measured fp32 matmul rate on CPUs (no MFU is
    logged on a device with neither)."""

    def __init__(self, window: int = 10, peak_flops: float | None = None) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.window = window
        self.peak_flops = peak_flops
        self._dims: ModelDims | None = None
        self._reference_runs = True
        self._trainable_base = True
        self._samples: deque[tuple[float, int, float, float]] = deque(maxlen=window)
        self._last: float | None = None

    def on_fit_start(self, trainer: Any, pl_module: Any) -> None:
        policy = pl_module.policy
        base = policy.get_base_model() if hasattr(policy, "get_base_model") else policy
        self._dims = ModelDims.from_config(base.config.to_dict())
        with pl_module.reference.as_reference() as model:
            self._reference_runs = model is not None
        self._trainable_base = pl_module.hparams.get("lora") is None
        if self.peak_flops is None:
            self.peak_flops = device_peak(pl_module.device)

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, batch_idx: int) -> None:
        if self._last is None:
            self._last = time.perf_counter()

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any, batch_idx: int) -> None:
        now = time.perf_counter()
        flops = step_flops(
            self._dims,
            batch_pairs(batch),
            reference=self._reference_runs,
            trainable_base=self._trainable_base,
        )
        tokens = int(batch["attention_mask"].sum())
        self._samples.append((now - self._last, tokens, flops.policy, flops.model))
        self._last = now
        seconds = sum(s[0] for s in self._samples)
        metrics = {
            "train/tokens_per_sec": sum(s[1] for s in self._samples) / seconds,
            "train/flops_per_sec": sum(s[3] for s in self._samples) / seconds,
        }
        if self.peak_flops:
            metrics["train/mfu"] = sum(s[2] for s in self._samples) / seconds / self.peak_flops
            metrics["train/mfu_with_reference"] = metrics["train/flops_per_sec"] / self.peak_flops
        pl_module.log_dict(metrics, on_step=True, on_epoch=False, batch_size=len(batch["input_ids"]) // 2)

    def on_validation_start(self, trainer: Any, pl_module: Any) -> None:
        self._last = None  # validation time is not training time

    def on_validation_end(self, trainer: Any, pl_module: Any) -> None:
        self._last = None
