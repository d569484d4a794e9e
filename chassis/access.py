"""One request's access line and metrics, whichever server answered it.

The aiohttp middleware (`chassis.aiohttp`) and the gateway's own front server both end a
request here, so the line's fields and the metrics' labels are the same for both.
"""

from __future__ import annotations

import logging
from typing import Any

from .logging import fast_json_handler
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
    if handler is None and not log.isEnabledFor(logging.INFO):
        return  # the line's fields are only built for a logger that will write them
    line = {
        "method": method,
        "route": route,
        "path": path,
        "status": status,
        # whole microseconds: round(x, 3) is a correctly rounded decimal, ten times the cost
        "duration_ms": int(elapsed * 1_000_000) / 1000,
        "client_id": client_id,
    }
    if fields:
        line.update(fields)
    if handler is not None:  # the same line, without the LogRecord machinery
        handler.write_fields(_LOGGER, "info", "request", line)
    else:
        log.info("request", extra=line)
