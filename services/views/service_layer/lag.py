"""How far behind the read models are: a Prometheus metric and what the routes and
`/health/ready` report.

Two numbers. The projection lag of each applied event (its `occurred_at` to the moment it was
applied) is a histogram and the last value a gauge. The staleness the routes act on is how long
ago the read models were last known complete: when the start-up catch-up reached the feed's
head and, after that, when the consumer last found its queue empty (everything published
before then is applied). An idle system is therefore not "behind"; one whose broker or
consumer is stuck is, and increasingly so.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, Histogram

__all__ = ["LagTracker"]

_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)


class LagTracker:
    def __init__(self, clock: Any = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self.started = clock()
        self.caught_up = False  # the start-up catch-up reached the feed's head
        self.complete_at: float | None = None  # when the models were last known complete
        self.last_lag: float | None = None
        self.position = 0
        self.applied = 0
        self.catch_up_error: str | None = None
        self._histogram: Histogram | None = None

    def register(self, registry: CollectorRegistry) -> None:
        self._histogram = Histogram(
            "views_projection_lag_seconds",
            "Time from an event's occurred_at to its application to the read models",
            buckets=_BUCKETS,
            registry=registry,
        )
        Gauge(
            "views_projection_last_lag_seconds",
            "Projection lag of the last applied event",
            registry=registry,
        ).set_function(lambda: self.last_lag or 0.0)
        Gauge(
            "views_read_model_staleness_seconds",
            "Seconds since the read models were last known to hold every published event",
            registry=registry,
        ).set_function(self.staleness)
        Gauge(
            "views_feed_position",
            "The highest orders feed position applied",
            registry=registry,
        ).set_function(lambda: self.position)

    def applied_event(self, occurred_at: datetime, position: int | None) -> float:
        """Record one applied event; returns its lag in seconds."""
        lag = max(0.0, self._clock() - occurred_at.astimezone(UTC).timestamp())
        with self._lock:
            self.last_lag = lag
            self.applied += 1
            if position is not None:
                self.position = max(self.position, position)
        if self._histogram is not None:
            self._histogram.observe(lag)
        return lag

    def caught_up_now(self, position: int) -> None:
        """The catch-up read the feed to its head."""
        with self._lock:
            self.caught_up = True
            self.catch_up_error = None
            self.position = max(self.position, position)
            self.complete_at = self._clock()

    def catch_up_failed(self, error: str) -> None:
        with self._lock:
            self.catch_up_error = error

    def idle(self) -> None:
        """The consumer found its queue empty: every published event is applied."""
        if self.caught_up:
            self.complete_at = self._clock()

    def staleness(self) -> float:
        since = self.complete_at if self.complete_at is not None else self.started
        return max(0.0, self._clock() - since)

    def report(self) -> dict[str, Any]:
        return {
            "staleness_seconds": round(self.staleness(), 3),
            "last_lag_seconds": None if self.last_lag is None else round(self.last_lag, 3),
            "position": self.position,
            "caught_up": self.caught_up,
            "catch_up_error": self.catch_up_error,
        }
