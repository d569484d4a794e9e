"""The API's use cases: a user's notifications, and marking one read.

Listing everyone's (owner None) is for staff tokens with notifications:read:all; marking read
stays the owner's alone, whatever the token: it changes the user's inbox, it reads nothing.

Exceptions: `NotificationNotFound` (404; also for another user's notification).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

from ..domain import Notification
from .unit_of_work import AbstractUnitOfWork

__all__ = [
    "NotificationNotFound",
    "latest_position",
    "list_notifications",
    "mark_read",
    "notifications_after",
]


class NotificationNotFound(Exception):
    pass


async def list_notifications(
    uow: Callable[[], AbstractUnitOfWork],
    owner: str | None,
    *,
    unread: bool | None = None,
    before: tuple[datetime, str] | None = None,
    limit: int = 20,
) -> tuple[list[Notification], tuple[datetime, str] | None]:
    async with uow() as unit:
        rows = await unit.notifications.list_for(
            owner, unread=unread, before=before, limit=limit + 1
        )
    page = rows[:limit]
    return page, ((page[-1].created_at, page[-1].id) if len(rows) > limit else None)


async def mark_read(
    uow: Callable[[], AbstractUnitOfWork], owner: str, notification_id: str
) -> Notification:
    """Idempotent: reading a read notification keeps its first read time."""
    async with uow() as unit:
        found = await unit.notifications.get(notification_id)
        if found is None or found.owner != owner:
            raise NotificationNotFound(notification_id)
        await unit.notifications.mark_read(notification_id, datetime.now(UTC))
        updated = await unit.notifications.get(notification_id)
        await unit.commit()
    assert updated is not None
    return updated


async def notifications_after(
    uow: Callable[[], AbstractUnitOfWork],
    owner: str | None,
    after: tuple[datetime, str] | None,
    limit: int,
) -> list[Notification]:
    """What a live stream sends next: the owner's notifications after its position."""
    async with uow() as unit:
        return await unit.notifications.list_after(owner, after, limit)


async def latest_position(
    uow: Callable[[], AbstractUnitOfWork], owner: str | None
) -> tuple[datetime, str] | None:
    """Where a new stream (no Last-Event-ID) starts: after the newest existing notification."""
    async with uow() as unit:
        rows = await unit.notifications.list_for(owner, unread=None, before=None, limit=1)
    return (rows[0].created_at, rows[0].id) if rows else None
