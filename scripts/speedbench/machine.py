"""The machine: device synchronisation, memory probes and matmul throughput."""

from __future__ import annotations

import ctypes
import os
import statistics
import threading
import time
from typing import Any

import torch

try:  # psutil is a dev dependency; without it the RSS comes from /proc
    import psutil
except ImportError:  # pragma: no cover
    psutil = None


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rss_bytes() -> int:
    if psutil is not None:
        return psutil.Process().memory_info().rss
    with open("/proc/self/statm") as f:  # pragma: no cover
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def malloc_trim() -> None:
    """Give freed heap memory back to the OS (glibc), so the RSS before a probe is live memory."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


class MemoryProbe:
    """Peak memory of the code inside ``with``: CUDA allocator peak, or RSS sampled every ``period``
    seconds by a thread (CPU). ``base`` and ``peak`` in bytes."""

    def __init__(self, device: torch.device, period: float = 0.001):
        self.device, self.period = device, period
        self.base = self.peak = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            self._stop.wait(self.period)

    def __enter__(self) -> MemoryProbe:
        if self.device.type == "cuda":
            sync(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.base = self.peak = torch.cuda.memory_allocated(self.device)
        else:
            malloc_trim()
            self.base = self.peak = rss_bytes()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            sync(self.device)
            self.peak = torch.cuda.max_memory_allocated(self.device)
        else:
            self.peak = max(self.peak, rss_bytes())
            self._stop.set()
            assert self._thread is not None
            self._thread.join()

    @property
    def extra(self) -> int:
        return max(self.peak - self.base, 0)


def available_memory(device: torch.device) -> int:
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if psutil is not None:
        return psutil.virtual_memory().available
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")  # pragma: no cover


def matmul_gflops(device: torch.device, size: int, reps: int) -> dict[str, Any]:
    """GFLOP/s of ``reps`` timed [size, size] @ [size, size] float32 matmuls (after one warm-up)."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    a @ b
    sync(device)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - t0)
    flops = 2.0 * size**3
    return {
        "size": size,
        "reps": reps,
        "seconds": times,
        "gflops_best": flops / min(times) / 1e9,
        "gflops_median": flops / statistics.median(times) / 1e9,
    }


def mb(n_bytes: float) -> float:
    return round(n_bytes / 2**20, 2)
