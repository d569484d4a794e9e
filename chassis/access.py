"""One request's access line and metrics, whichever server answered it.

The aiohttp middleware (`chassis.aiohttp`) and the gateway's own front server both end a
request here, so the line's fields and the metrics' labels are the same for both.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from .logging import correlation_id, fast_json_handler, timestamp
from .metrics import RequestMetrics

__all__ = ["record_request"]

_LOGGER = "portico.http"
log = logging.getLogger(_LOGGER)


def record_request(
    metrics: RequestMetrics,
    method: str,
    route: str,
    path: str,
    status: int,
    elapsed: float,
    client_id: str | None,
    fields: dict[str, Any] | None = None,
) -> None:
    """Observe the request in the metrics and write its JSON access line (when INFO is on)."""
    metrics.observe(route, method, status, elapsed)
    handler = fast_json_handler(log, logging.INFO)
    if handler is None:
        if not log.isEnabledFor(logging.INFO):
            return  # the line's fields are only built for a logger that will write them
        line = {
            "method": method,
            "route": route,
            "path": path,
            "status": status,
            "duration_ms": round(elapsed * 1000, 3),
            "client_id": client_id,
        }
        if fields:
            line.update(fields)
        log.info("request", extra=line)
        return
    # The same line without the LogRecord machinery, built in one go: a hot path everywhere.
    doc = {
        "ts": timestamp(time.time()),
        "level": "info",
        "service": handler.service,
        "logger": _LOGGER,
        "msg": "request",
        "correlation_id": correlation_id.get(),
        "method": method,
        "route": route,
        "path": path,
        "status": status,
        "duration_ms": round(elapsed * 1000, 3),
        "client_id": client_id,
    }
    if not doc["correlation_id"]:
        del doc["correlation_id"]  # as `line_head` leaves it out
    if fields:
        doc.update(fields)
    handler.write_doc(doc)
