"""Which events become notifications, and what they say.

One notification per event: `order.confirmed` and `order.rejected` are an order's outcome
(exactly one per order), `payment.*` events are recorded too (kind "payment"). `order.created`
makes no notification; it tells us an order's owner, which payment events do not carry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["BINDINGS", "NOTIFICATION_SENT", "PUBLISHES", "Message", "Notification", "compose"]

BINDINGS = ("order.created", "order.confirmed", "order.rejected", "payment.*")
# Published through the outbox with each stored notification (the read side counts them).
NOTIFICATION_SENT = "notification.sent"
PUBLISHES = (NOTIFICATION_SENT,)


@dataclass(frozen=True)
class Message:
    """What to tell the user about one event."""

    kind: str  # "order" | "payment"
    subject: str
    body: str


@dataclass(frozen=True)
class Notification:
    id: str
    owner: str | None
    kind: str
    event_type: str
    event_id: str
    order_id: str | None
    subject: str
    body: str
    created_at: datetime
    read_at: datetime | None = None

    @property
    def read(self) -> bool:
        return self.read_at is not None


def _short(order_id: object) -> str:
    return str(order_id)[:8]


def compose(event_type: str, data: Mapping[str, Any]) -> Message | None:
    """The message for an event, or None when the event is not one to notify about."""
    order = _short(data.get("order_id", ""))
    match event_type:
        case "order.confirmed":
            total = f" ({data['total']} {data.get('currency', 'EUR')})" if data.get("total") else ""
            return Message(
                "order",
                f"Your order {order} is confirmed",
                f"Thank you! Order {data.get('order_id')} is confirmed{total}.",
            )
        case "order.rejected":
            return Message(
                "order",
                f"Your order {order} could not be completed",
                f"Order {data.get('order_id')} was rejected: {data.get('reason') or 'unknown'}.",
            )
        case "payment.captured":
            return Message(
                "payment",
                f"Payment received for order {order}",
                f"{data.get('amount')} {data.get('currency', 'EUR')} were charged "
                f"(payment {data.get('payment_id')}).",
            )
        case "payment.refunded":
            return Message(
                "payment",
                f"Refund for order {order}",
                f"{data.get('amount')} were refunded (payment {data.get('payment_id')}).",
            )
    if event_type.startswith("payment."):
        return Message("payment", f"Payment update for order {order}", event_type)
    return None
