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
    # whole microseconds: round(x, 3) is a correctly rounded decimal, ten times the cost
    duration_ms = int(elapsed * 1_000_000) / 1000
    if handler is not None:
        # The whole line as one dict, in the order `write_fields` gives: one of these is
        # written per request, so it skips the intermediate dicts (ADR 0006's measurements).
        cid = correlation_id.get()
        doc = {
            "ts": timestamp(time.time()),
            "level": "info",
            "service": handler.service,
            "logger": _LOGGER,
            "msg": "request",
            "correlation_id": cid,
            "method": method,
            "route": route,
            "path": path,
            "status": status,
            "duration_ms": duration_ms,
            "client_id": client_id,
        }
        if not cid:
            del doc["correlation_id"]
        if fields:
            doc.update(fields)
        handler.write_document(doc)
        return
    if not log.isEnabledFor(logging.INFO):
        return  # the line's fields are only built for a logger that will write them
    line = {
        "method": method,
        "route": route,
        "path": path,
        "status": status,
        "duration_ms": duration_ms,
        "client_id": client_id,
    }
    if fields:
        line.update(fields)
    log.info("request", extra=line)
