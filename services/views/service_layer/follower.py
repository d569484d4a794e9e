"""The start-up sequence of the read side, on its own thread: declare the queue (events
published from then on wait in it), catch up from the feed to its head, then follow live
events. A catch-up that cannot reach orders is retried every VIEWS_CATCH_UP_RETRY seconds while
the consumer already runs; the optimistic stream versions keep the two from applying an event
twice (ADR 0030).
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import Engine

from ..adapters.consumer import ProjectionConsumer
from ..adapters.feed import FeedUnavailable
from .projector import Projector

__all__ = ["Follower"]

log = logging.getLogger("portico.views")


class Follower:
    def __init__(
        self, projector: Projector, consumer: ProjectionConsumer, engine: Engine, retry: float
    ) -> None:
        self.projector = projector
        self.consumer = consumer
        self.engine = engine
        self.retry = retry
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="views-follower", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.consumer.stop(timeout)

    def _run(self) -> None:
        try:
            self.consumer.declare()
        except Exception:
            log.warning("broker unreachable at start-up; the consumer keeps trying")
        first = True
        while not self._stopping.is_set():
            try:
                self.projector.catch_up(self.engine)
                break
            except FeedUnavailable as exc:
                self.projector.lag.catch_up_failed(str(exc))
                log.warning("catch-up failed; retrying", extra={"error": str(exc)})
            except Exception as exc:  # a conflict with the consumer, a database hiccup
                self.projector.lag.catch_up_failed(repr(exc))
                log.warning("catch-up failed; retrying", exc_info=True)
            if first:  # follow live events meanwhile; the catch-up fills in behind them
                self.consumer.start()
                first = False
            self._stopping.wait(self.retry)
        if first and not self._stopping.is_set():
            self.consumer.start()
