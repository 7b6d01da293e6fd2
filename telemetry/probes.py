"""Probes of the process itself: how late the event loop runs, how long the collector stops it.

Loop lag: a timer asks to run every `every` seconds and records how late it ran. Whatever
held the loop (a long callback, a gc pass, the GIL held by another thread, the CPU given
to another process) shows up here, whoever caused it. uvloop's timers have 1 ms
resolution, so the lag is known to about a millisecond.
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
import traceback
from pathlib import Path
from typing import Callable

from telemetry.histogram import Histogram
from telemetry.registry import Telemetry


class LoopLag:
    def __init__(self, telemetry: Telemetry, every: float = 0.005) -> None:
        self.histogram = telemetry.histogram("loop_lag_us", "how late a periodic timer ran")
        self.every = every
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0

    def start(self) -> None:
        self._due = time.perf_counter() + self.every
        self._handle = asyncio.get_running_loop().call_later(self.every, self._tick)

    def _tick(self) -> None:
        now = time.perf_counter()
        self.histogram.record(int((now - self._due) * 1e6))
        self._due = now + self.every
        self._handle = asyncio.get_running_loop().call_later(self.every, self._tick)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()


class GcPauses:
    """Every collection's duration (gc.callbacks), by generation; the young ones are cheap,
    a full one walks every object not frozen."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.histograms = [telemetry.histogram(f"gc_gen{g}_us", f"generation {g} collections") for g in range(3)]
        self._started = 0.0

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.histograms[info["generation"]].record(int((time.perf_counter() - self._started) * 1e6))

    def start(self) -> None:
        gc.callbacks.append(self._callback)

    def stop(self) -> None:
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)


def timed(schedule: Callable[[Callable[[], None]], object], histogram: Histogram) -> Callable[[Callable[[], None]], object]:
    """`schedule` (loop.call_soon) whose callbacks record how long each one ran."""

    def run_timed(callback: Callable[[], None]) -> None:
        started = time.perf_counter()
        callback()
        histogram.record(int((time.perf_counter() - started) * 1e6))

    return lambda callback: schedule(lambda: run_timed(callback))


def timed_call(call: Callable[[], object], histogram: Histogram) -> Callable[[], None]:
    """`call`, recording how long each call ran."""

    def run_timed() -> None:
        started = time.perf_counter()
        call()
        histogram.record(int((time.perf_counter() - started) * 1e6))

    return run_timed


def resident_bytes() -> int:
    """This process's resident memory (Linux /proc; 0 where there is none)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def raised_at(exc: BaseException) -> str:
    """Where an exception came from, innermost frame first, on one line (a log line's `at=`)."""
    frames = traceback.extract_tb(exc.__traceback__)
    return " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(frames))
