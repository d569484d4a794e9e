"""The inventory's outgoing events, through the chassis' transactional outbox.

The one module that talks to `chassis.messaging`: the outbox row is inserted on the caller's
connection, inside the transaction that changes the stock, and a relay thread publishes it
after the commit (at least once; consumers deduplicate by event id).
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import MetaData, Table
from sqlalchemy.ext.asyncio import AsyncConnection

from chassis.messaging import (
    Event,
    outbox_insert,
    outbox_table,
)

__all__ = [
    "PUBLISHES",
    "STOCK_LOW",
    "EventSink",
    "outbox_for",
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
