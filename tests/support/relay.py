"""Run the chassis outbox relay once over a table, capturing what it would publish."""

from __future__ import annotations

from typing import Any

import orjson
from sqlalchemy import Table
from sqlalchemy.engine import URL

from chassis import create_db_engine
from chassis.db import sync_url
from chassis.messaging import BrokerSettings, OutboxRelay


def captured_messages(url: str | URL, table: Table) -> list[dict[str, Any]]:
    """The JSON bodies the relay would publish now (it marks them published)."""
    if isinstance(url, URL):
        url = url.render_as_string(hide_password=False)
    engine = create_db_engine(sync_url(url))
    bodies: list[dict[str, Any]] = []

    class _Producer:
        def publish(self, body: bytes, **_: Any) -> None:
            bodies.append(orjson.loads(body))

    try:
        relay = OutboxRelay(engine, table, BrokerSettings())
        relay._producer = lambda: _Producer()  # type: ignore[method-assign,assignment,return-value]
        while relay.run_once():
            pass
    finally:
        engine.dispose()
    return bodies
