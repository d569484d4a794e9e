"""The request id: the client's `X-Request-Id` when it is acceptable, else a new one.

Assigned first, before routing (`Pipeline.start`), so every answer - a 404 included - and
every access line carries it; both servers write `ex.rid` on every answer and forward it
upstream (gateway.pipeline.forwarding).
"""

from __future__ import annotations

from chassis.logging import accept_request_id

from .exchange import Exchange

__all__ = ["assign"]


def assign(ex: Exchange) -> str:
    rid = ex.rid
    if not rid:
        rid = ex.rid = accept_request_id(ex.request_id)
    return rid
