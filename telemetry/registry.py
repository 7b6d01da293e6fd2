"""The server's figures by name: histograms that components record into, gauges read on demand.

Components are handed the registry (or nothing, in unit tests) and ask it for their
histograms once; a report (the admin channel's TELEMETRY, the bench's breakdown) reads
every figure at once. Names say the unit: `_us` microseconds, `_orders`, `_rows`.
"""

from __future__ import annotations

from typing import Callable

from telemetry.histogram import Histogram


class Telemetry:
    def __init__(self) -> None:
        self.histograms: dict[str, Histogram] = {}
        self.gauges: dict[str, Callable[[], int]] = {}

    def histogram(self, name: str, doc: str = "") -> Histogram:
        h = self.histograms.get(name)
        if h is None:
            h = self.histograms[name] = Histogram(name, doc)
        return h

    def gauge(self, name: str, read: Callable[[], int]) -> None:
        self.gauges[name] = read

    def reset(self) -> None:
        for h in self.histograms.values():
            h.reset()

    def report(self) -> dict[str, dict[str, int] | int]:
        out: dict[str, dict[str, int] | int] = {name: h.summary() for name, h in sorted(self.histograms.items())}
        for name, read in sorted(self.gauges.items()):
            out[name] = read()
        return out
