"""The server's figures by name: histograms and counters that components record into,
gauges and counts read on demand.

Components are handed the registry (or nothing, in unit tests) and ask it for their
histograms and counters once; a report (the admin channel's TELEMETRY, the bench's
breakdown), STATS and /metrics read every figure at once. Names say the unit: `_us`
microseconds, `_orders`, `_rows`, `_bytes`; counters end in `_total`.
"""

from __future__ import annotations

from typing import Callable

from telemetry.histogram import Histogram

# Histograms whose median and 99th percentile STATS shows (all of them are on /metrics).
HEADLINE = ("gateway_ack_us", "journal_fdatasync_us", "journal_batch_orders")


class Counter:
    """A count that only grows, optionally split by one label (a reject's reason)."""

    __slots__ = ("name", "doc", "label", "value", "by")

    def __init__(self, name: str, doc: str, label: str | None) -> None:
        self.name, self.doc, self.label = name, doc, label
        self.value = 0
        self.by: dict[str, int] = {}

    def inc(self, n: int = 1) -> None:
        self.value += n

    def inc_by(self, key: str, n: int = 1) -> None:
        self.by[key] = self.by.get(key, 0) + n
        self.value += n


class Telemetry:
    def __init__(self) -> None:
        self.histograms: dict[str, Histogram] = {}
        self.gauges: dict[str, Callable[[], int]] = {}
        self.counters: dict[str, Counter] = {}
        self.counts: dict[str, Callable[[], int]] = {}  # counters kept elsewhere (the journal's fsyncs)
        self.docs: dict[str, str] = {}

    def histogram(self, name: str, doc: str = "") -> Histogram:
        h = self.histograms.get(name)
        if h is None:
            h = self.histograms[name] = Histogram(name, doc)
        return h

    def gauge(self, name: str, read: Callable[[], int], doc: str = "") -> None:
        self.gauges[name] = read
        self.docs[name] = doc

    def counter(self, name: str, doc: str = "", label: str | None = None) -> Counter:
        c = self.counters.get(name)
        if c is None:
            c = self.counters[name] = Counter(name, doc, label)
        return c

    def count(self, name: str, read: Callable[[], int], doc: str = "") -> None:
        """A counter another component keeps: read when the figures are."""
        self.counts[name] = read
        self.docs[name] = doc

    def figures(self) -> dict[str, int]:
        """Every counter and gauge, a reject count per reason, and the headline histograms'
        p50 and p99: STATS prints these."""
        out: dict[str, int] = {}
        for name, c in sorted(self.counters.items()):
            out[name] = c.value
            for key, n in sorted(c.by.items()):
                out[f"{name.removesuffix('_total')}.{key}"] = n
        for name, read in sorted(self.counts.items()):
            out[name] = read()
        for name, read in sorted(self.gauges.items()):
            out[name] = read()
        for name in HEADLINE:
            h = self.histograms.get(name)
            if h is not None:
                base, unit = (name[:-3], "_us") if name.endswith("_us") else (name, "")  # gateway_ack_p50_us
                out[f"{base}_p50{unit}"] = h.percentile(50)
                out[f"{base}_p99{unit}"] = h.percentile(99)
        return out

    def reset(self) -> None:
        for h in self.histograms.values():
            h.reset()

    def report(self) -> dict[str, dict[str, int] | int]:
        out: dict[str, dict[str, int] | int] = {name: h.summary() for name, h in sorted(self.histograms.items())}
        for name, read in sorted(self.gauges.items()):
            out[name] = read()
        return out
