"""The payments' outgoing events: their types and data.

Writing goes through the chassis' `OutboxWriter`: event rows are inserted on the caller's
connection inside the transaction that captures or refunds, and a relay thread publishes
them after the commit (at least once; consumers deduplicate by event id).
"""

from __future__ import annotations

from chassis.messaging import Event

from ..domain import Payment

__all__ = [
    "PAYMENT_CAPTURED",
    "PAYMENT_REFUNDED",
    "PUBLISHES",
    "captured",
    "refunded",
]

PAYMENT_CAPTURED = "payment.captured"
PAYMENT_REFUNDED = "payment.refunded"
# Every event type payments publishes: the contracts runner derives message boundaries from it.
PUBLISHES = (PAYMENT_CAPTURED, PAYMENT_REFUNDED)


def captured(payment: Payment) -> Event:
    data = {
        "payment_id": payment.id,
        "order_id": payment.order_id,
        "amount": payment.amount,
        "currency": payment.currency,
    }
    return Event(type=PAYMENT_CAPTURED, data=data)


def refunded(payment: Payment) -> Event:
    data = {"payment_id": payment.id, "order_id": payment.order_id, "amount": payment.amount}
    return Event(type=PAYMENT_REFUNDED, data=data)
