"""One database transaction around a use case or a saga transition; rolled back unless
committed explicitly. The use cases and the saga take a factory of units (`uow()`): SQL in
the app, in memory (`InMemoryUnitOfWork`, on a `MemoryStore`) in unit tests."""

from __future__ import annotations

import abc
from collections.abc import Callable
from types import TracebackType

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from chassis.db import reader

from ..adapters.memory import MemoryOrderRepository, MemoryStore
from ..adapters.repository import (
    AbstractOrderRepository,
    OrderRepository,
    StoredOrder,
    read_order,
    read_order_by_key,
)

__all__ = [
    "AbstractUnitOfWork",
    "InMemoryUnitOfWork",
    "SqlAlchemyUnitOfWork",
    "SqlReadUnitOfWork",
    "UnitOfWorkFactory",
]


class AbstractUnitOfWork(abc.ABC):
    orders: AbstractOrderRepository

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


UnitOfWorkFactory = Callable[[], AbstractUnitOfWork]


class SqlAlchemyUnitOfWork(AbstractUnitOfWork):
    """One pooled connection and transaction per `async with` block."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        self._conn: AsyncConnection | None = None

    async def __aenter__(self) -> AbstractUnitOfWork:
        self._conn = await self.engine.connect()
        await self._conn.begin()
        self.orders = OrderRepository(self._conn)
        return await super().__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            if conn.in_transaction():
                await conn.rollback()
        finally:
            await conn.close()

    async def commit(self) -> None:
        assert self._conn is not None, "commit outside an `async with` block"
        await self._conn.commit()

    async def rollback(self) -> None:
        if self._conn is not None and self._conn.in_transaction():
            await self._conn.rollback()


class _Reads:
    """The reads by id and by key of a read unit: one statement each, run by
    `chassis.db.reader` outside a transaction and at the fewest hops the driver allows."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._read = reader(engine)

    async def get(self, order_id: str) -> StoredOrder | None:
        return await self._read(read_order, order_id)

    async def get_by_key(self, owner: str, key: str) -> StoredOrder | None:
        return await self._read(read_order_by_key, owner, key)


class SqlReadUnitOfWork(AbstractUnitOfWork):
    """For use cases that only read by id or key: no connection held, no transaction (on
    SQLite one hop to a thread instead of ~5, on PostgreSQL no BEGIN/ROLLBACK). It cannot
    commit; one can serve every request (it keeps no state)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.orders = _Reads(engine)  # type: ignore[assignment]  # the two reads only

    async def commit(self) -> None:
        raise RuntimeError("a read unit of work cannot commit")

    async def rollback(self) -> None:
        pass


class InMemoryUnitOfWork(AbstractUnitOfWork):
    """Works on a copy of the store; a commit publishes the orders it changed and the events
    it wrote, so rollback is real and two units never overwrite each other's orders. Build one
    per use (`lambda: InMemoryUnitOfWork(store)`), as concurrent tasks need their own."""

    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    def _begin(self) -> None:
        self._work = self.store.copy()
        self._outbox_at = len(self._work.outbox)
        self._events_at = len(self._work.events)
        self._repo = self.orders = MemoryOrderRepository(self._work)

    async def __aenter__(self) -> AbstractUnitOfWork:
        self._begin()
        return await super().__aenter__()

    async def commit(self) -> None:
        for order_id in self._repo.touched:
            self.store.rows[order_id] = self._work.rows[order_id]
        self.store.outbox.extend(self._work.outbox[self._outbox_at :])
        self.store.events.extend(self._work.events[self._events_at :])
        self._begin()

    async def rollback(self) -> None:
        self._begin()
