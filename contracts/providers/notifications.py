"""notifications as a provider: notifications recorded through its own repository."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from chassis import create_db_engine, sqlite_url
from chassis.db import sync_url
from services.notifications.__main__ import init
from services.notifications.adapters.repository import record_notification
from services.notifications.app import create_app
from services.notifications.domain import compose
from services.notifications.settings import NotificationsSettings

from ..harness import serve_aiohttp
from . import CONTRACT_USER, Context, Provider


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

    def close() -> None:
        ctx.loop.run(backend.stop())  # type: ignore[arg-type]
        engine.dispose()

    return Provider(
        "notifications", backend, {"a notification exists": notification_exists}, close=close
    )
