"""/metrics: the telemetry registry in Prometheus's text format, read when scraped.

Nothing here runs on the hot path: a scrape walks the registry (telemetry/registry.py)
that the gateway, the journal and the trade log record into anyway, and renders it with
prometheus-client. Histograms in microseconds are exported in seconds, the Prometheus
convention, with bucket bounds at powers of two microseconds (where the registry's
buckets are exact); counts like batch sizes keep their unit.
"""

from __future__ import annotations

from typing import Iterator

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from telemetry.histogram import Histogram
from telemetry.registry import Telemetry

PREFIX = "tickline_"
# The last finite bucket: 2**26 us is 67 s; 2**20 for counts (rows, orders). A fixed set
# of bounds, so each bucket is one stable series.
MAX_POWER_US, MAX_POWER = 26, 20


class TelemetryCollector:
    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry

    def collect(self) -> Iterator[Metric]:
        t = self.telemetry
        for name, c in sorted(t.counters.items()):
            base = PREFIX + name.removesuffix("_total")
            if c.label is None:
                family = CounterMetricFamily(base, c.doc or name, value=c.value)
            else:
                family = CounterMetricFamily(base, c.doc or name, labels=[c.label])
                for key, n in sorted(c.by.items()):
                    family.add_metric([key], n)
            yield family
        for name, read in sorted(t.counts.items()):
            yield CounterMetricFamily(PREFIX + name.removesuffix("_total"), t.docs.get(name) or name, value=read())
        for name, read in sorted(t.gauges.items()):
            yield GaugeMetricFamily(PREFIX + name, t.docs.get(name) or name, value=read())
        for name, h in sorted(t.histograms.items()):
            yield _histogram(name, h)


def _histogram(name: str, h: Histogram) -> HistogramMetricFamily:
    seconds = name.endswith("_us")
    scale = 1e-6 if seconds else 1.0
    bounds = [1 << power for power in range((MAX_POWER_US if seconds else MAX_POWER) + 1)]
    buckets: list[tuple[str, float]] = [(repr(b * scale) if seconds else str(b), n) for b, n in zip(bounds, h.below(bounds), strict=True)]
    buckets.append(("+Inf", h.count))
    metric = PREFIX + (name.removesuffix("_us") + "_seconds" if seconds else name)
    return HistogramMetricFamily(metric, h.doc or name, buckets=buckets, sum_value=h.total * scale)


def metrics_registry(telemetry: Telemetry) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(TelemetryCollector(telemetry))
    ProcessCollector(registry=registry)  # process_resident_memory_bytes, cpu seconds, open fds
    return registry


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
