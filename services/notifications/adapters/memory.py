"""In-memory notifications with the SQL adapters' behaviour, for fast use-case tests."""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass, field
from datetime import datetime

from ..domain import Message, Notification
from .repository import AbstractNotificationReader, AbstractNotificationWriter

__all__ = ["MemoryNotificationReader", "MemoryNotificationWriter", "MemoryStore"]


@dataclass
class MemoryStore:
    """The "database": notifications (immutable values) by id, and order owners."""

    notifications: dict[str, Notification] = field(default_factory=dict)
    owners: dict[str, str] = field(default_factory=dict)

    def copy(self) -> MemoryStore:
        return MemoryStore(dict(self.notifications), dict(self.owners))


class MemoryNotificationWriter(AbstractNotificationWriter):
    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    def remember_owner(self, order_id: str, owner: str) -> None:
        self.store.owners.setdefault(order_id, owner)
        for n in list(self.store.notifications.values()):
            if n.order_id == order_id and n.owner is None:
                self.store.notifications[n.id] = dataclasses.replace(n, owner=owner)

    def owner_of(self, order_id: str) -> str | None:
        return self.store.owners.get(order_id)

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
        self.store.notifications[n.id] = n
        return n


class MemoryNotificationReader(AbstractNotificationReader):
    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    async def list_for(
        self,
        owner: str | None,
        *,
        unread: bool | None,
        before: tuple[datetime, str] | None,
        limit: int,
    ) -> list[Notification]:
        rows = [
            n
            for n in self.store.notifications.values()
            if (owner is None or n.owner == owner)
            and (unread is None or (n.read_at is None) == unread)
            and (before is None or (n.created_at, n.id) < before)
        ]
        rows.sort(key=lambda n: (n.created_at, n.id), reverse=True)
        return rows[:limit]

    async def list_after(
        self, owner: str | None, after: tuple[datetime, str] | None, limit: int
    ) -> list[Notification]:
        rows = [
            n
            for n in self.store.notifications.values()
            if (owner is None or n.owner == owner)
            and (after is None or (n.created_at, n.id) > after)
        ]
        rows.sort(key=lambda n: (n.created_at, n.id))
        return rows[:limit]

    async def get(self, notification_id: str) -> Notification | None:
        return self.store.notifications.get(notification_id)

    async def mark_read(self, notification_id: str, now: datetime) -> None:
        n = self.store.notifications.get(notification_id)
        if n is not None and n.read_at is None:
            self.store.notifications[notification_id] = dataclasses.replace(n, read_at=now)
