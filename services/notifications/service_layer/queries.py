"""The API's use cases: a user's notifications, and marking one read.

Listing everyone's (owner None) is for staff tokens with notifications:read:all; marking read
stays the owner's alone, whatever the token: it changes the user's inbox, it reads nothing.

Exceptions: `NotificationNotFound` (404; also for another user's notification).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.ext.asyncio import AsyncEngine

from ..adapters.repository import NotificationReader
from ..domain import Notification

__all__ = ["NotificationNotFound", "list_notifications", "mark_read"]


class NotificationNotFound(Exception):
    pass


async def list_notifications(
    engine: AsyncEngine,
    owner: str | None,
    *,
    unread: bool | None = None,
    before: tuple[datetime, str] | None = None,
    limit: int = 20,
) -> tuple[list[Notification], tuple[datetime, str] | None]:
    async with engine.connect() as conn:
        rows = await NotificationReader(conn).list_for(
            owner, unread=unread, before=before, limit=limit + 1
        )
    page = rows[:limit]
    return page, ((page[-1].created_at, page[-1].id) if len(rows) > limit else None)


async def mark_read(engine: AsyncEngine, owner: str, notification_id: str) -> Notification:
    """Idempotent: reading a read notification keeps its first read time."""
    async with engine.begin() as conn:
        reader = NotificationReader(conn)
        found = await reader.get(notification_id)
        if found is None or found.owner != owner:
            raise NotificationNotFound(notification_id)
        await reader.mark_read(notification_id, datetime.now(UTC))
        updated = await reader.get(notification_id)
    assert updated is not None
    return updated
