"""Timing and peak-memory primitives shared by every benchmark.

- `time_calls`: warm-up calls, then timed repeats of several callables interleaved round-robin (so slow drifts
  of a noisy machine hit every variant alike); `torch.cuda.synchronize()` around each call on CUDA. The median
  is the reported number, min/max show the spread.
- `PeakMemory`: on CUDA, `torch.cuda.max_memory_allocated` after a reset (exact, allocator level); on the
  CPU, the process resident set size sampled every few milliseconds by a thread (an approximation: freed memory
  that the C allocator keeps is not seen as new growth, so we trim it first).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import resource
import statistics
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass

import torch

MIB = 1024 * 1024


def progress(message: str) -> None:
    """One line of progress on stdout (benchmarks take minutes on a CPU)."""
    print(f"  {message}", flush=True)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def summarize(times_ms: list[float]) -> dict[str, float | int]:
    """Median (the reported value), min, max and count of a list of durations in ms."""
    if not times_ms:
        raise ValueError("no timings to summarize")
    return {"median_ms": statistics.median(times_ms), "min_ms": min(times_ms), "max_ms": max(times_ms),
            "repeats": len(times_ms)}


def time_calls(calls: Mapping[str, Callable[[], object]], device: torch.device, warmup: int = 1,
               repeats: int = 3) -> dict[str, dict[str, float | int]]:
    """{name: summary} for each zero-argument callable: `warmup` untimed calls each, then `repeats` rounds."""
    for call in calls.values():
        for _ in range(warmup):
            call()
    synchronize(device)
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(max(repeats, 1)):
        for name, call in calls.items():
            synchronize(device)
            start = time.perf_counter()
            call()
            synchronize(device)
            times[name].append((time.perf_counter() - start) * 1000.0)
    return {name: summarize(values) for name, values in times.items()}


# --------------------------------------------------------------------------------------------------- memory
def rss_bytes() -> int:
    """Current resident set size of this process (Linux /proc; falls back to the ru_maxrss high-water mark)."""
    try:
        with open("/proc/self/statm") as file:
            return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def release_memory(device: torch.device) -> None:
    """Collect garbage and hand freed memory back (CUDA cache; glibc heap via malloc_trim)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


@dataclass
class MemoryReading:
    """Peak and baseline in MiB; `kind` says what was measured."""

    kind: str
    baseline_mib: float
    peak_mib: float

    @property
    def increase_mib(self) -> float:
        return self.peak_mib - self.baseline_mib

    def as_dict(self) -> dict[str, float | str]:
        return {"memory_kind": self.kind, "baseline_mib": round(self.baseline_mib, 1),
                "peak_mib": round(self.peak_mib, 1), "peak_increase_mib": round(self.increase_mib, 1)}


class _RSSSampler(threading.Thread):
    def __init__(self, interval_s: float = 0.002) -> None:
        super().__init__(daemon=True)
        self.interval_s = interval_s
        self.peak = rss_bytes()
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, rss_bytes())
            time.sleep(self.interval_s)

    def stop(self) -> int:
        self._stop_event.set()
        self.join()
        self.peak = max(self.peak, rss_bytes())
        return self.peak


@contextlib.contextmanager
def peak_memory(device: torch.device) -> Iterator[list[MemoryReading]]:
    """Measure the peak memory of the enclosed block; the reading is appended to the yielded list."""
    release_memory(device)
    readings: list[MemoryReading] = []
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device)
        yield readings
        synchronize(device)
        readings.append(MemoryReading("cuda_max_memory_allocated", baseline / MIB,
                                      torch.cuda.max_memory_allocated(device) / MIB))
        return
    baseline = rss_bytes()
    sampler = _RSSSampler()
    sampler.start()
    try:
        yield readings
    finally:
        peak = sampler.stop()
    readings.append(MemoryReading("cpu_process_rss", baseline / MIB, peak / MIB))


# ---------------------------------------------------------------------------------------------- run context
MODES = ("quick", "cpu", "cuda")


@dataclass
class Context:
    """What every benchmark receives: the device and the size set (`mode`).

    quick = tiny configs for the tests (seconds); cpu = the documented reduced set a CPU can finish in
    minutes; cuda = the full set of the issue (paper sizes, batch 1 and 8, fp32/bf16, eager/compile).
    """

    device: torch.device
    mode: str

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"benchmark mode must be one of {MODES}, got {self.mode!r}")

    @property
    def quick(self) -> bool:
        return self.mode == "quick"

    @property
    def full(self) -> bool:
        return self.mode == "cuda"


def default_context(quick: bool = False, device: str = "auto") -> Context:
    """CUDA when present (unless `device` says otherwise); mode quick / cuda / cpu accordingly."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    resolved = torch.device(device)
    mode = "quick" if quick else ("cuda" if resolved.type == "cuda" else "cpu")
    return Context(resolved, mode)
