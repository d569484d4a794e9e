"""The event handler the consumer runs inside its inbox transaction, so a redelivered event
(already in the inbox) never makes a second notification."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from sqlalchemy import Connection

from chassis.messaging import Event

from ..adapters.repository import owner_of, record_notification, remember_owner
from ..domain import compose

__all__ = ["handle_event"]

email = logging.getLogger("portico.notifications.email")


def handle_event(event: Event, conn: Connection) -> None:
    data = event.data
    order_id = str(data["order_id"]) if data.get("order_id") else None
    owner = data.get("owner") if isinstance(data.get("owner"), str) else None
    if order_id and owner:
        remember_owner(conn, order_id, owner)
    elif order_id:
        owner = owner_of(conn, order_id)
    message = compose(event.type, data)
    if message is None:
        return
    note = record_notification(
        conn,
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
