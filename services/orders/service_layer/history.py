"""Reading the event log: an order's history, the order as it was at a time, the feed.

The current state is read from the cached row (the hot path); these answer from the events
themselves (ADR 0029), so they show exactly what was recorded, upcast to today's schemas.
"""

from __future__ import annotations

from datetime import datetime

from chassis.eventstore import RecordedEvent

from ..domain import Order
from .orders import OrderNotFound
from .unit_of_work import UnitOfWorkFactory

__all__ = ["event_feed", "order_as_of", "order_history"]


async def order_history(
    uow: UnitOfWorkFactory, owner: str | None, order_id: str
) -> list[RecordedEvent]:
    """Every event of the order in version order; OrderNotFound unless `owner`'s (None: any)."""
    async with uow() as unit:
        events = await unit.orders.history(order_id)
    if not events or (owner is not None and events[0].data.get("owner") != owner):
        raise OrderNotFound(order_id)
    return events


async def order_as_of(
    uow: UnitOfWorkFactory, owner: str | None, order_id: str, as_of: datetime
) -> Order:
    """The fold of the order's events that occurred at or before `as_of`; OrderNotFound when
    the order did not exist yet (or is not `owner`'s)."""
    events = await order_history(uow, owner, order_id)
    until = [e for e in events if e.at <= as_of]
    if not until:
        raise OrderNotFound(order_id)
    return Order.from_events(until)


async def event_feed(
    uow: UnitOfWorkFactory, after: int, limit: int
) -> tuple[list[RecordedEvent], int]:
    """Up to `limit` events after log position `after`, and the log's last position now."""
    async with uow() as unit:
        return await unit.orders.feed(after, limit)
