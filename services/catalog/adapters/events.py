"""The catalog's outgoing events: their types and how a product event becomes an outbox row.

Writing goes through the chassis' `OutboxWriter`: the unit of work hands it the product
events a use case recorded, and their rows are inserted on the unit of work's connection
just before it commits, so an event exists exactly when its change does. A relay thread
(`app.py`) publishes them on the events exchange after the commit, at least once; consumers
deduplicate by event id, and the gateway's cache purges (purging twice is harmless).
"""

from __future__ import annotations

from chassis.messaging import Event

from ..domain import ProductCreated, ProductDeleted, ProductEvent, ProductUpdated

__all__ = [
    "PRODUCT_CREATED",
    "PRODUCT_DELETED",
    "PRODUCT_UPDATED",
    "PUBLISHES",
    "to_event",
]

PRODUCT_CREATED = ProductCreated.type
PRODUCT_UPDATED = ProductUpdated.type
PRODUCT_DELETED = ProductDeleted.type
# Every event type catalog publishes: the contracts runner derives message boundaries from it.
PUBLISHES = (PRODUCT_CREATED, PRODUCT_UPDATED, PRODUCT_DELETED)


def to_event(event: ProductEvent) -> Event:
    """The message a recorded product event is published as."""
    return Event(type=event.type, data=event.data())
