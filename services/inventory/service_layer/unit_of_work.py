"""Units of work: one transaction around a use case, rolled back unless committed explicitly.

A use case `record`s the events of its change; `commit` writes them with it (the SQL unit of
work into the outbox, in the same transaction, then wakes the relay) and forgets them on
rollback.
"""

from __future__ import annotations

import abc
from types import TracebackType

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from chassis.db import reader
from chassis.messaging import Event, OutboxWriter

from ..adapters.memory import MemoryInventoryRepository, MemoryStore
from ..adapters.orm import outbox
from ..adapters.repository import (
    AbstractInventoryRepository,
    InventoryRepository,
    read_reservation,
    read_stock,
    read_stocks,
)
from ..domain import Reservation, StockLevel

__all__ = [
    "AbstractUnitOfWork",
    "InMemoryUnitOfWork",
    "SqlAlchemyUnitOfWork",
    "SqlReadUnitOfWork",
]


class AbstractUnitOfWork(abc.ABC):
    inventory: AbstractInventoryRepository
    pending: list[Event]

    async def __aenter__(self) -> AbstractUnitOfWork:
        self.pending = []
        return self

    def record(self, event: Event) -> None:
        """An event of this unit's change, written by `commit` with it."""
        self.pending.append(event)

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

    def __init__(self, engine: AsyncEngine, events: OutboxWriter | None = None) -> None:
        self.engine = engine
        self.events = events or OutboxWriter(outbox)
        self._conn: AsyncConnection | None = None

    async def __aenter__(self) -> AbstractUnitOfWork:
        self._conn = await self.engine.connect()
        await self._conn.begin()
        self.inventory = InventoryRepository(self._conn)
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
            self.pending = []
        finally:
            if conn is not None:
                await conn.close()

    async def commit(self) -> None:
        assert self._conn is not None, "commit outside an `async with` block"
        events, self.pending = self.pending, []
        if events:
            await self.events.write_async(self._conn, events)
        await self._conn.commit()
        if events:
            self.events.committed()

    async def rollback(self) -> None:
        self.pending = []
        if self._conn is not None and self._conn.in_transaction():
            await self._conn.rollback()


class _Reads:
    """The reads by key of a read unit: each one statement, run by `chassis.db.reader`
    outside a transaction and at the fewest hops the driver allows."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._read = reader(engine)

    async def get_stock(self, sku: str) -> StockLevel | None:
        return await self._read(read_stock, sku)

    async def get_stocks(self, skus: list[str]) -> dict[str, StockLevel]:
        return await self._read(read_stocks, skus)

    async def get_reservation(self, order_id: str) -> Reservation | None:
        return await self._read(read_reservation, order_id)


class SqlReadUnitOfWork(AbstractUnitOfWork):
    """For use cases that only read by key: no connection held, no transaction (on SQLite
    one hop to a thread instead of ~5, on PostgreSQL no BEGIN/ROLLBACK). It cannot commit;
    one can serve every request (it keeps no state)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.inventory = _Reads(engine)  # type: ignore[assignment]  # the reads by key only

    async def commit(self) -> None:
        raise RuntimeError("a read unit of work cannot commit")

    async def rollback(self) -> None:
        self.pending = []


class InMemoryUnitOfWork(AbstractUnitOfWork):
    """Works on a copy of the store and publishes it on commit, so rollback is real; the
    events of committed changes are in `published`, in order."""

    def __init__(self, store: MemoryStore | None = None) -> None:
        self.store = store or MemoryStore()
        self.commits = 0
        self.published: list[Event] = []

    async def __aenter__(self) -> AbstractUnitOfWork:
        self._work = self.store.copy()
        self.inventory = MemoryInventoryRepository(self._work)
        return await super().__aenter__()

    async def commit(self) -> None:
        self.store.stock, self.store.reservations = self._work.stock, self._work.reservations
        self._work = self.store.copy()
        self.inventory = MemoryInventoryRepository(self._work)
        self.published.extend(self.pending)
        self.pending = []
        self.commits += 1

    async def rollback(self) -> None:
        self.pending = []
        self._work = self.store.copy()
        self.inventory = MemoryInventoryRepository(self._work)
