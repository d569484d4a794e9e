"""Reads for the API (asyncio) and the rows the event handler writes (a blocking Connection,
inside the consumer's inbox transaction); each behind an abstract class that the in-memory
fakes (`adapters/memory.py`) follow too."""

from __future__ import annotations

import abc
import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Row, and_, insert, or_, select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from ..domain import Message, Notification
from .orm import notifications, order_owners

__all__ = [
    "AbstractNotificationReader",
    "AbstractNotificationWriter",
    "NotificationReader",
    "SqlNotificationWriter",
    "record_notification",
    "remember_owner",
]


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _db_time(dialect: str, value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None) if dialect == "sqlite" else value


def _notification(row: Row[Any]) -> Notification:
    return Notification(
        id=row.id,
        owner=row.owner,
        kind=row.kind,
        event_type=row.event_type,
        event_id=row.event_id,
        order_id=row.order_id,
        subject=row.subject,
        body=row.body,
        created_at=_aware(row.created_at),  # type: ignore[arg-type]
        read_at=_aware(row.read_at),
    )


def remember_owner(conn: Connection, order_id: str, owner: str) -> None:
    """Record who owns an order, and give that owner the notifications waiting for it."""
    known = conn.execute(
        select(order_owners.c.owner).where(order_owners.c.order_id == order_id)
    ).first()
    if known is None:
        conn.execute(insert(order_owners).values(order_id=order_id, owner=owner))
    conn.execute(
        update(notifications)
        .where(notifications.c.order_id == order_id, notifications.c.owner.is_(None))
        .values(owner=owner)
    )


def owner_of(conn: Connection, order_id: str) -> str | None:
    row = conn.execute(
        select(order_owners.c.owner).where(order_owners.c.order_id == order_id)
    ).first()
    return row.owner if row else None


def record_notification(
    conn: Connection,
    *,
    owner: str | None,
    message: Message,
    event_type: str,
    event_id: str,
    order_id: str | None,
    now: datetime,
) -> Notification:
    n = Notification(
        id=str(uuid.uuid4()),
        owner=owner,
        kind=message.kind,
        event_type=event_type,
        event_id=event_id,
        order_id=order_id,
        subject=message.subject,
        body=message.body,
        created_at=now,
    )
    conn.execute(
        insert(notifications).values(
            id=n.id,
            owner=n.owner,
            kind=n.kind,
            event_type=n.event_type,
            event_id=n.event_id,
            order_id=n.order_id,
            subject=n.subject,
            body=n.body,
            created_at=_db_time(conn.dialect.name, now),
        )
    )
    return n


class AbstractNotificationWriter(abc.ABC):
    """What the event handler writes, inside the consumer's inbox transaction."""

    @abc.abstractmethod
    def remember_owner(self, order_id: str, owner: str) -> None:
        """Record who owns an order, and give that owner the notifications waiting for it."""

    @abc.abstractmethod
    def owner_of(self, order_id: str) -> str | None: ...

    @abc.abstractmethod
    def record(
        self,
        *,
        owner: str | None,
        message: Message,
        event_type: str,
        event_id: str,
        order_id: str | None,
        now: datetime,
    ) -> Notification: ...


class SqlNotificationWriter(AbstractNotificationWriter):
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def remember_owner(self, order_id: str, owner: str) -> None:
        remember_owner(self.conn, order_id, owner)

    def owner_of(self, order_id: str) -> str | None:
        return owner_of(self.conn, order_id)

    def record(
        self,
        *,
        owner: str | None,
        message: Message,
        event_type: str,
        event_id: str,
        order_id: str | None,
        now: datetime,
    ) -> Notification:
        return record_notification(
            self.conn,
            owner=owner,
            message=message,
            event_type=event_type,
            event_id=event_id,
            order_id=order_id,
            now=now,
        )


class AbstractNotificationReader(abc.ABC):
    """What the API's use cases read and change."""

    @abc.abstractmethod
    async def list_for(
        self,
        owner: str | None,
        *,
        unread: bool | None,
        before: tuple[datetime, str] | None,
        limit: int,
    ) -> list[Notification]:
        """The owner's notifications (everyone's for None), newest first."""

    @abc.abstractmethod
    async def list_after(
        self, owner: str | None, after: tuple[datetime, str] | None, limit: int
    ) -> list[Notification]:
        """The owner's notifications (everyone's for None) after `after`, oldest first: what
        a live stream sends next (ADR 0035)."""

    @abc.abstractmethod
    async def get(self, notification_id: str) -> Notification | None: ...

    @abc.abstractmethod
    async def mark_read(self, notification_id: str, now: datetime) -> None:
        """Set read_at unless it is set already."""


class NotificationReader(AbstractNotificationReader):
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    async def list_for(
        self,
        owner: str | None,
        *,
        unread: bool | None,
        before: tuple[datetime, str] | None,
        limit: int,
    ) -> list[Notification]:
        """The owner's notifications (everyone's for None), newest first."""
        c = notifications.c
        stmt = select(notifications).order_by(c.created_at.desc(), c.id.desc()).limit(limit)
        if owner is not None:
            stmt = stmt.where(c.owner == owner)
        if unread is True:
            stmt = stmt.where(c.read_at.is_(None))
        elif unread is False:
            stmt = stmt.where(c.read_at.is_not(None))
        if before is not None:
            at = _db_time(self.conn.dialect.name, before[0])
            stmt = stmt.where(or_(c.created_at < at, and_(c.created_at == at, c.id < before[1])))
        return [_notification(r) for r in await self.conn.execute(stmt)]

    async def list_after(
        self, owner: str | None, after: tuple[datetime, str] | None, limit: int
    ) -> list[Notification]:
        c = notifications.c
        stmt = select(notifications).order_by(c.created_at, c.id).limit(limit)
        if owner is not None:
            stmt = stmt.where(c.owner == owner)
        if after is not None:
            at = _db_time(self.conn.dialect.name, after[0])
            stmt = stmt.where(or_(c.created_at > at, and_(c.created_at == at, c.id > after[1])))
        return [_notification(r) for r in await self.conn.execute(stmt)]

    async def get(self, notification_id: str) -> Notification | None:
        stmt = select(notifications).where(notifications.c.id == notification_id)
        row = (await self.conn.execute(stmt)).first()
        return _notification(row) if row else None

    async def mark_read(self, notification_id: str, now: datetime) -> None:
        c = notifications.c
        await self.conn.execute(
            update(notifications)
            .where(c.id == notification_id, c.read_at.is_(None))
            .values(read_at=_db_time(self.conn.dialect.name, now))
        )
