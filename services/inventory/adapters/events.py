"""The inventory's outgoing events: their types and data.

Writing goes through the chassis' `OutboxWriter` (`write_async`): the outbox row is inserted
on the caller's connection, inside the transaction that changes the stock, and a relay
thread publishes it after the commit (at least once; consumers deduplicate by event id).
"""

from __future__ import annotations

from chassis.messaging import Event

__all__ = [
    "PUBLISHES",
    "STOCK_LOW",
    "stock_low",
]

STOCK_LOW = "stock.low"
# Every event type inventory publishes: the contracts runner derives message boundaries from it.
PUBLISHES = (STOCK_LOW,)


def stock_low(sku: str, available: int) -> Event:
    return Event(type=STOCK_LOW, data={"sku": sku, "available": available})
