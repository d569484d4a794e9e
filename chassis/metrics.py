"""Prometheus metrics shared by the gateway and the services.

Recording a request is on every service's hot path, so `RequestMetrics.observe` only bumps
plain numbers under one lock (one dict hit per route, method and status, a bisect, two
additions); a collector turns them into the `http_requests_total` counter and the
`http_request_duration_seconds` histogram (summed over statuses) when `/metrics` is scraped.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["CONTENT_TYPE_LATEST", "RequestMetrics", "render"]

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BUCKET_LABELS = (*(str(b) for b in _BUCKETS), "+Inf")


class _RequestCollector(Collector):
    def __init__(self, metrics: RequestMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self._metrics
        with m._lock:
            observed = [(key, list(values)) for key, values in m._observed.items()]
        count = CounterMetricFamily(
            "http_requests",
            "HTTP requests served",
            labels=["service", "route", "method", "status"],
        )
        histograms: dict[tuple[str, str], list[float]] = {}
        for (route, method, status), values in observed:
            count.add_metric([m.service, route, method, str(status)], sum(values[:-1]))
            total = histograms.get((route, method))
            if total is None:
                histograms[(route, method)] = values
            else:
                histograms[(route, method)] = [a + b for a, b in zip(total, values, strict=True)]
        latency = HistogramMetricFamily(
            "http_request_duration_seconds",
            "Time to serve an HTTP request",
            labels=["service", "route", "method"],
        )
        for (route, method), values in histograms.items():
            cumulative, buckets = 0, []
            for label, n in zip(_BUCKET_LABELS, values, strict=False):
                cumulative += int(n)
                buckets.append((label, cumulative))
            latency.add_metric([m.service, route, method], buckets, values[-1])
        yield count
        yield latency


class RequestMetrics:
    """Request counts and latency per route, method and status for one service."""

    def __init__(self, service: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.service = service
        self._lock = threading.Lock()  # Flask threads record concurrently
        # per (route, method, status): one count per bucket (the last is +Inf), then the sum
        # of seconds
        self._observed: dict[tuple[str, str, int], list[float]] = {}
        self.registry.register(_RequestCollector(self))

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        with self._lock:
            values = self._observed.get(key)
            if values is None:
                values = self._observed[key] = [0] * (len(_BUCKETS) + 2)
            values[bisect_left(_BUCKETS, seconds)] += 1
            values[-1] += seconds


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
