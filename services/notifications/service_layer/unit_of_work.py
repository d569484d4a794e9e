"""Units of work for the API's use cases: one transaction, rolled back unless committed.

(The event handler needs none: it runs inside the consumer's inbox transaction, on the
connection the chassis gives it.)
"""

from __future__ import annotations

import abc
from types import TracebackType

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from ..adapters.memory import MemoryNotificationReader, MemoryStore
from ..adapters.repository import AbstractNotificationReader, NotificationReader

__all__ = ["AbstractUnitOfWork", "InMemoryUnitOfWork", "SqlAlchemyUnitOfWork"]


class AbstractUnitOfWork(abc.ABC):
    notifications: AbstractNotificationReader

    async def __aenter__(self) -> AbstractUnitOfWork:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.rollback()  # a no-op after commit

    @abc.abstractmethod
    async def commit(self) -> None: ...

    @abc.abstractmethod
    async def rollback(self) -> None: ...


class SqlAlchemyUnitOfWork(AbstractUnitOfWork):
    """One pooled connection and transaction per `async with` block."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._conn: AsyncConnection | None = None

    async def __aenter__(self) -> AbstractUnitOfWork:
        self._conn = await self.engine.connect()
        await self._conn.begin()
        self.notifications = NotificationReader(self._conn)
        return await super().__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, self._conn = self._conn, None
        try:
            if conn is not None and conn.in_transaction():
                await conn.rollback()
        finally:
            if conn is not None:
                await conn.close()

    async def commit(self) -> None:
        assert self._conn is not None, "commit outside an `async with` block"
        await self._conn.commit()

    async def rollback(self) -> None:
        if self._conn is not None and self._conn.in_transaction():
            await self._conn.rollback()


class InMemoryUnitOfWork(AbstractUnitOfWork):
    """Works on a copy of the store and publishes it on commit, so rollback is real."""

    def __init__(self, store: MemoryStore | None = None) -> None:
        self.store = store or MemoryStore()
        self.commits = 0

    async def __aenter__(self) -> AbstractUnitOfWork:
        self._work = self.store.copy()
        self.notifications = MemoryNotificationReader(self._work)
        return await super().__aenter__()

    async def commit(self) -> None:
        self.store.notifications = self._work.notifications
        self._work = self.store.copy()
        self.notifications = MemoryNotificationReader(self._work)
        self.commits += 1

    async def rollback(self) -> None:
        self._work = self.store.copy()
        self.notifications = MemoryNotificationReader(self._work)
