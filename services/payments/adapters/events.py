"""The payments' outgoing events, through the chassis' transactional outbox.

The one module that talks to `chassis.messaging`: event rows are inserted on the caller's
connection inside the transaction that captures or refunds, and a relay thread publishes
them after the commit (at least once; consumers deduplicate by event id).
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import Connection, MetaData, Table

from chassis.messaging import (
    Event,
    outbox_insert,
    outbox_table,
)

from ..domain import Payment

__all__ = [
    "PAYMENT_CAPTURED",
    "PAYMENT_REFUNDED",
    "PUBLISHES",
    "EventSink",
    "outbox_for",
]

PAYMENT_CAPTURED = "payment.captured"
PAYMENT_REFUNDED = "payment.refunded"
# Every event type payments publishes: the contracts runner derives message boundaries from it.
PUBLISHES = (PAYMENT_CAPTURED, PAYMENT_REFUNDED)


def outbox_for(metadata: MetaData) -> Table:
    return outbox_table(metadata)


class EventSink:
    """Writes events into the outbox; `committed()` nudges the relay to publish at once."""

    def __init__(self, table: Table, wake: Callable[[], None] | None = None) -> None:
        self.table = table
        self.wake = wake

    def captured(self, conn: Connection, payment: Payment) -> None:
        data = {
            "payment_id": payment.id,
            "order_id": payment.order_id,
            "amount": payment.amount,
            "currency": payment.currency,
        }
        conn.execute(outbox_insert(self.table, Event(type=PAYMENT_CAPTURED, data=data)))

    def refunded(self, conn: Connection, payment: Payment) -> None:
        data = {"payment_id": payment.id, "order_id": payment.order_id, "amount": payment.amount}
        conn.execute(outbox_insert(self.table, Event(type=PAYMENT_REFUNDED, data=data)))

    def committed(self) -> None:
        if self.wake is not None:
            self.wake()
