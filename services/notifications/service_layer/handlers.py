"""The event handler the consumer runs inside its inbox transaction, so a redelivered event
(already in the inbox) never makes a second notification.

`handle_event(event, conn)` is what the chassis consumer calls; `apply_event` is the use case
over any writer (SQL on that connection, or in memory in unit tests). A stored notification
also writes `notification.sent` into the outbox, in the same transaction."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy import Connection

from chassis.messaging import Event, OutboxWriter

from ..adapters.orm import outbox
from ..adapters.repository import AbstractNotificationWriter, SqlNotificationWriter
from ..domain import NOTIFICATION_SENT, Notification, compose

__all__ = ["apply_event", "handle_event", "sent_event"]

_outbox = OutboxWriter(outbox)  # the relay polls it (no wake-up: the commit is the consumer's)

email = logging.getLogger("portico.notifications.email")


def handle_event(event: Event, conn: Connection) -> Notification | None:
    """What the consumer runs: the notification stored (and its `notification.sent`)."""
    note = apply_event(event, SqlNotificationWriter(conn))
    if note is not None:
        _outbox.write(conn, [sent_event(note)])
    return note


def sent_event(note: Notification) -> Event:
    """`notification.sent`: which notification, about which order, for whom (None: not yet
    known, as for a payment event before its order's)."""
    return Event(
        NOTIFICATION_SENT,
        {"notification_id": note.id, "order_id": note.order_id, "user": note.owner},
    )


def apply_event(event: Event, writer: AbstractNotificationWriter) -> Notification | None:
    """The notification the event makes (None: nothing to tell), and its "email"."""
    data = event.data
    order_id = str(data["order_id"]) if data.get("order_id") else None
    owner = data.get("owner") if isinstance(data.get("owner"), str) else None
    if order_id and owner:
        writer.remember_owner(order_id, owner)
    elif order_id:
        owner = writer.owner_of(order_id)
    message = compose(event.type, data)
    if message is None:
        return None
    note = writer.record(
        owner=owner,
        message=message,
        event_type=event.type,
        event_id=event.id,
        order_id=order_id,
        now=datetime.now(UTC),
    )
    # The "email": a log line is the delivery channel in this reference platform.
    email.info(
        "email",
        extra={
            "to": owner,
            "subject": message.subject,
            "body": message.body,
            "notification_id": note.id,
            "event_id": event.id,
        },
    )
    return note
