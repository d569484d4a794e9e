"""The catalog's outgoing events, through the chassis' transactional outbox.

The one module that talks to `chassis.messaging`: the unit of work hands it the product
events a use case recorded, and their rows are inserted on the unit of work's connection
just before it commits, so an event exists exactly when its change does. A relay thread
(`app.py`) publishes them on the events exchange after the commit, at least once; consumers
deduplicate by event id, and the gateway's cache purges (purging twice is harmless).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from sqlalchemy import Connection, MetaData, Table

from chassis.messaging import Event, outbox_insert, outbox_table

from ..domain import ProductCreated, ProductDeleted, ProductEvent, ProductUpdated

__all__ = [
    "PRODUCT_CREATED",
    "PRODUCT_DELETED",
    "PRODUCT_UPDATED",
    "PUBLISHES",
    "EventSink",
    "outbox_for",
]

PRODUCT_CREATED = ProductCreated.type
PRODUCT_UPDATED = ProductUpdated.type
PRODUCT_DELETED = ProductDeleted.type
# Every event type catalog publishes: the contracts runner derives message boundaries from it.
PUBLISHES = (PRODUCT_CREATED, PRODUCT_UPDATED, PRODUCT_DELETED)


def outbox_for(metadata: MetaData) -> Table:
    return outbox_table(metadata)


class EventSink:
    """Writes events into the outbox; `committed()` nudges the relay to publish at once."""

    def __init__(self, table: Table, wake: Callable[[], None] | None = None) -> None:
        self.table = table
        self.wake = wake

    def write(self, conn: Connection, events: Iterable[ProductEvent]) -> None:
        for event in events:
            conn.execute(outbox_insert(self.table, Event(type=event.type, data=event.data())))

    def committed(self) -> None:
        if self.wake is not None:
            self.wake()
