"""Interpreter settings for a long-running exchange, with the measurements behind them."""

from __future__ import annotations

import gc
import sys
import time
from typing import Callable

from telemetry.histogram import Histogram


def tune_runtime() -> None:
    """Call once the books are rebuilt, before serving.

    Garbage collector: the books hold hundreds of thousands of long-lived, acyclic objects,
    and every order allocates a dozen short-lived ones. With the default thresholds the
    collector spends a quarter of the server's time rescanning the books (bench/load.py
    closed loop: 60k -> 76k req/s with it off). So: freeze what recovery built, and
    collect young objects less often.

    Switch interval: the journal's commit thread needs the GIL for a moment when the disk
    answers. With the default 5 ms a busy event loop makes it wait up to 5 ms, and every
    ACK with it (bench/load.py at 10,000 orders/s: ACK p50 2.3 ms at 5 ms, ~1.1 ms at 0.5 ms).
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    sys.setswitchinterval(0.0005)


def timed(schedule: Callable[[Callable[[], None]], object], histogram: Histogram) -> Callable[[Callable[[], None]], object]:
    """`schedule` (loop.call_soon) whose callbacks record how long each one ran."""

    def run_timed(callback: Callable[[], None]) -> None:
        started = time.perf_counter()
        callback()
        histogram.record(int((time.perf_counter() - started) * 1e6))

    return lambda callback: schedule(lambda: run_timed(callback))
