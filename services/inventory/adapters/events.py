"""The inventory's outgoing events, through the chassis' transactional outbox.

The one module that talks to `chassis.messaging`: the outbox row is inserted on the caller's
connection, inside the transaction that changes the stock, and a relay thread publishes it
after the commit (at least once; consumers deduplicate by event id).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine, MetaData, Table
from sqlalchemy.ext.asyncio import AsyncConnection

from chassis import create_db_engine
from chassis.db import sync_url
from chassis.messaging import (
    BrokerSettings,
    Event,
    OutboxRelay,
    check_broker,
    outbox_insert,
    outbox_table,
)

__all__ = [
    "PUBLISHES",
    "STOCK_LOW",
    "EventSink",
    "RelayHandle",
    "broker_ready",
    "outbox_for",
    "start_relay",
]

STOCK_LOW = "stock.low"
# Every event type inventory publishes: the contracts runner derives message boundaries from it.
PUBLISHES = (STOCK_LOW,)


def outbox_for(metadata: MetaData) -> Table:
    return outbox_table(metadata)


class EventSink:
    """Writes events into the outbox; `committed()` nudges the relay to publish at once."""

    def __init__(self, table: Table, wake: Callable[[], None] | None = None) -> None:
        self.table = table
        self.wake = wake

    async def stock_low(self, conn: AsyncConnection, sku: str, available: int) -> None:
        event = Event(type=STOCK_LOW, data={"sku": sku, "available": available})
        await conn.execute(outbox_insert(self.table, event))

    def committed(self) -> None:
        if self.wake is not None:
            self.wake()


@dataclass
class RelayHandle:
    relay: OutboxRelay
    engine: Engine

    def stop(self) -> None:
        """Blocking (joins the relay thread): call it from a worker thread in async code."""
        try:
            self.relay.stop()
        finally:
            self.engine.dispose()


def start_relay(database_url: str, table: Table) -> RelayHandle:
    """A relay on a blocking engine over the same database (the relay is a thread)."""
    engine = create_db_engine(sync_url(database_url))
    relay = OutboxRelay(engine, table, BrokerSettings.from_env())
    relay.start()
    return RelayHandle(relay, engine)


def broker_ready() -> None:
    """Readiness (blocking): the broker the relay publishes to accepts a connection."""
    check_broker(BrokerSettings.from_env())
