"""Prometheus metrics shared by the gateway and the services.

Label children are cached per (route, method, status) so that recording a request on the hot
path is two dictionary hits and two increments, not a label lookup each time.
"""

from __future__ import annotations

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

__all__ = ["CONTENT_TYPE_LATEST", "RequestMetrics", "render"]

_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class RequestMetrics:
    """Request counts and latency per route, method and status for one service."""

    def __init__(self, service: str, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.service = service
        self._count = Counter(
            "http_requests_total",
            "HTTP requests served",
            ["service", "route", "method", "status"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "http_request_duration_seconds",
            "Time to serve an HTTP request",
            ["service", "route", "method"],
            buckets=_BUCKETS,
            registry=self.registry,
        )
        self._counters: dict[tuple[str, str, int], Counter] = {}
        self._histograms: dict[tuple[str, str], Histogram] = {}

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, status)
        counter = self._counters.get(key)
        if counter is None:
            counter = self._counters[key] = self._count.labels(
                self.service, route, method, str(status)
            )
        counter.inc()
        hkey = (route, method)
        hist = self._histograms.get(hkey)
        if hist is None:
            hist = self._histograms[hkey] = self._latency.labels(self.service, route, method)
        hist.observe(seconds)


def render(registry: CollectorRegistry) -> bytes:
    return generate_latest(registry)
