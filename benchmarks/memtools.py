"""Where a CPU process's memory is: RSS (anonymous vs file-backed), glibc's heap (in use vs held free), and
the bytes autograd saves for backward. ``tracemalloc`` sees none of torch's allocations; these do.

- :func:`rss` reads ``/proc/self/status`` (VmRSS, RssAnon, RssFile, VmHWM = the peak RSS so far);
- :func:`mallinfo` calls glibc's ``mallinfo2``: bytes malloc hands out (``in_use``: heap chunks + mmapped
  blocks) and bytes it holds free without returning them to the OS (``free_held``: fragmentation and
  retention). RSS − in_use − file pages ≈ what the allocator keeps around;
- :class:`RssSampler` samples RSS every few milliseconds in a thread and tags each sample with the current
  phase, so a step's peak can be attributed to forward, backward or the optimizer;
- :class:`SavedTensors` counts the unique storage bytes that autograd saves during a forward pass (the
  activations that live until backward).
"""

from __future__ import annotations

import ctypes
import threading
import time
from typing import Any

import torch

GiB = 2**30


def rss() -> dict[str, int]:
    """Bytes: rss, anon, file, peak (VmHWM)."""
    fields = {"VmRSS": "rss", "RssAnon": "anon", "RssFile": "file", "VmHWM": "peak"}
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            key = line.split(":")[0]
            if key in fields:
                out[fields[key]] = int(line.split()[1]) * 1024
    return out


def reset_peak() -> None:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to clear_refs)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


class _Mallinfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


_libc = ctypes.CDLL("libc.so.6")
_libc.mallinfo2.restype = _Mallinfo2


def mallinfo() -> dict[str, int]:
    """glibc's view, bytes: in_use (heap chunks + mmapped blocks), free_held (free chunks in its heaps),
    mmapped, heap (sbrk'd + arena bytes). Covers every thread's arena."""
    m = _libc.mallinfo2()
    return {"in_use": m.uordblks + m.hblkhd, "free_held": m.fordblks, "mmapped": m.hblkhd, "heap": m.arena}


def malloc_trim() -> None:
    _libc.malloc_trim(0)


def mallopt(param: int, value: int) -> bool:
    """glibc ``mallopt``: M_TRIM_THRESHOLD -1, M_TOP_PAD -2, M_MMAP_THRESHOLD -3, M_MMAP_MAX -4,
    M_ARENA_MAX -8."""
    return bool(_libc.mallopt(param, value))


class RssSampler:
    """Samples RSS every ``interval`` s in a background thread; ``phase(name)`` tags what follows."""

    def __init__(self, interval: float = 0.005) -> None:
        self.interval = interval
        self.current = "start"
        self.peaks: dict[str, int] = {}
        self.timeline: list[tuple[float, str, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RssSampler:
        self._t0 = time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()

    def phase(self, name: str) -> None:
        self._sample()
        self.current = name
        self._sample()

    def _sample(self) -> None:
        with open("/proc/self/statm") as f:
            value = int(f.read().split()[1]) * 4096
        name = self.current
        self.peaks[name] = max(self.peaks.get(name, 0), value)
        if not self.timeline or self.timeline[-1][1] != name or abs(self.timeline[-1][2] - value) > 64 * 2**20:
            self.timeline.append((time.perf_counter() - self._t0, name, value))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            time.sleep(self.interval)


class SavedTensors:
    """Unique storage bytes saved for backward inside the block (parameters excluded)."""

    def __init__(self, exclude: list[torch.Tensor] = ()) -> None:
        self._exclude = {t.untyped_storage().data_ptr() for t in exclude}
        self.storages: dict[int, int] = {}
        self.by_shape: dict[tuple, int] = {}

    def _pack(self, t: torch.Tensor) -> torch.Tensor:
        if t.device.type == "cpu" and not t.is_sparse:
            s = t.untyped_storage()
            ptr = s.data_ptr()
            if ptr not in self._exclude and ptr not in self.storages:
                self.storages[ptr] = s.nbytes()
                key = (tuple(t.shape), str(t.dtype))
                self.by_shape[key] = self.by_shape.get(key, 0) + s.nbytes()
        return t

    def __enter__(self) -> SavedTensors:
        self._ctx = torch.autograd.graph.saved_tensors_hooks(self._pack, lambda t: t)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._ctx.__exit__(*exc)

    @property
    def total(self) -> int:
        return sum(self.storages.values())
