"""notifications as a provider: notifications recorded through its own repository, and
`notification.sent` as its event handler writes it into the outbox, read back by the chassis
relay - the message exactly as it would be published."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from chassis import create_db_engine, sqlite_url
from chassis.db import sync_url
from chassis.messaging import Event
from services.notifications.__main__ import init
from services.notifications.adapters.orm import outbox
from services.notifications.adapters.repository import record_notification
from services.notifications.app import create_app
from services.notifications.domain import compose
from services.notifications.service_layer.handlers import handle_event
from services.notifications.settings import NotificationsSettings

from ..harness import serve_aiohttp
from . import CONTRACT_USER, Context, Message, Provider, relay_capture


def start(ctx: Context) -> Provider:
    url = sqlite_url(ctx.workdir / "notifications.db").replace("sqlite://", "sqlite+aiosqlite://")
    settings = NotificationsSettings(database_url=url, consume=False)
    init(settings)
    app = create_app(settings, verifier=ctx.issuer.async_verifier())
    backend = ctx.loop.run(serve_aiohttp(app))
    engine = create_db_engine(sync_url(url))

    def notification_exists(id: str = "note-1", order_id: str = "ord-1") -> None:
        message = compose("order.confirmed", {"order_id": order_id, "total": "19.98"})
        assert message is not None
        with engine.begin() as conn:
            note = record_notification(
                conn,
                owner=CONTRACT_USER,
                message=message,
                event_type="order.confirmed",
                event_id=uuid.uuid4().hex,
                order_id=order_id,
                now=datetime.now(UTC),
            )
        ctx.alias(id, note.id)

    def notification_sent() -> Message:
        """An order's outcome handled as the consumer does: the notification and its event."""
        order_id = f"ord-{uuid.uuid4().hex[:8]}"
        with engine.begin() as conn:
            for type_ in ("order.created", "order.confirmed"):
                data = {"order_id": order_id, "owner": CONTRACT_USER, "total": "19.98"}
                handle_event(Event(type_, data), conn)
        return relay_capture(engine, outbox)[-1]

    def close() -> None:
        ctx.loop.run(backend.stop())  # type: ignore[arg-type]
        engine.dispose()

    return Provider(
        "notifications",
        backend,
        {"a notification exists": notification_exists},
        {"notification.sent": notification_sent},
        close=close,
    )
