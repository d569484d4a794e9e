"""Units of work: one transaction around a use case, rolled back unless committed explicitly.

A use case `record`s the product events of its change; `commit` writes them with the change
(the SQL unit of work into the outbox, in the same transaction) and forgets them on rollback.

With a product cache (ADR 0021) the SQL unit of work wraps its repository in the cache-aside
decorator: a read unit (`read_through=True`, what the read endpoints use) answers gets by id
and sku from the cache; any unit deletes the entries its writes made stale right after the
commit, before the relay is woken to publish the change's event. A read unit only reads: on
PostgreSQL it checks its connection out in AUTOCOMMIT (`chassis.db.read_connection`: no BEGIN and
ROLLBACK round trips around the SELECT) and refuses to commit.
"""

from __future__ import annotations

import abc
from types import TracebackType

from sqlalchemy import Connection, Engine, RootTransaction

from chassis.db import read_connection
from chassis.messaging import OutboxWriter

from ..adapters.cache import CachedProductRepository, ProductCache
from ..adapters.events import to_event
from ..adapters.memory import MemoryIdempotencyStore, MemoryProductRepository, MemoryStore
from ..adapters.orm import outbox
from ..adapters.repository import AbstractIdempotencyStore, AbstractProductRepository
from ..adapters.sql import SqlIdempotencyStore, SqlProductRepository
from ..domain import ProductEvent

__all__ = ["AbstractUnitOfWork", "InMemoryUnitOfWork", "SqlAlchemyUnitOfWork"]


class AbstractUnitOfWork(abc.ABC):
    products: AbstractProductRepository
    idempotency: AbstractIdempotencyStore
    pending: list[ProductEvent]

    def __enter__(self) -> AbstractUnitOfWork:
        self.pending = []
        return self

    def record(self, event: ProductEvent) -> None:
        """An event of this unit's change, written by `commit` with it."""
        self.pending.append(event)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.rollback()  # a no-op after commit

    @abc.abstractmethod
    def commit(self) -> None: ...

    @abc.abstractmethod
    def rollback(self) -> None: ...


class SqlAlchemyUnitOfWork(AbstractUnitOfWork):
    """One pooled connection and transaction per `with` block; reusable for another block.

    Recorded events go into the outbox table on the same connection, just before the commit.
    """

    def __init__(
        self,
        engine: Engine,
        events: OutboxWriter | None = None,
        *,
        cache: ProductCache | None = None,
        read_through: bool = False,
    ) -> None:
        self.engine = engine
        self.events = events or OutboxWriter(outbox)
        self.cache = cache
        self.read_through = read_through
        self._cached: CachedProductRepository | None = None
        self._conn: Connection | None = None
        self._tx: RootTransaction | None = None

    def __enter__(self) -> AbstractUnitOfWork:
        self._conn = read_connection(self.engine) if self.read_through else self.engine.connect()
        self._tx = self._conn.begin()
        sql = SqlProductRepository(self._conn)
        if self.cache is None:
            self.products = sql
        else:
            self._cached = CachedProductRepository(sql, self.cache, read_through=self.read_through)
            self.products = self._cached
        self.idempotency = SqlIdempotencyStore(self._conn)
        return super().__enter__()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            super().__exit__(exc_type, exc, tb)
        finally:
            if self._conn is not None:
                self._conn.close()
            self._conn = self._tx = self._cached = None

    def commit(self) -> None:
        assert self._tx is not None and self._conn is not None, "commit outside a `with` block"
        if self.read_through:
            raise RuntimeError("a read unit (read_through=True) does not write")
        events, self.pending = self.pending, []
        if events:
            self.events.write(self._conn, map(to_event, events))
        self._tx.commit()
        if self._cached is not None:
            self._cached.committed()  # before the relay publishes: no refill from old entries
        if events:
            self.events.committed()

    def rollback(self) -> None:
        self.pending = []
        if self._cached is not None:
            self._cached.rolled_back()
        if self._tx is not None and self._tx.is_active:
            self._tx.rollback()


class InMemoryUnitOfWork(AbstractUnitOfWork):
    """Works on a copy of the store and publishes it on commit, so rollback is real; the
    events of committed changes are in `published`, in order."""

    def __init__(self, store: MemoryStore | None = None) -> None:
        self.store = store or MemoryStore()
        self.commits = 0
        self.published: list[ProductEvent] = []
        self._work: MemoryStore | None = None

    def __enter__(self) -> AbstractUnitOfWork:
        self._work = self.store.copy()
        self.products = MemoryProductRepository(self._work)
        self.idempotency = MemoryIdempotencyStore(self._work)
        return super().__enter__()

    def commit(self) -> None:
        assert self._work is not None, "commit outside a `with` block"
        self.store.products = self._work.products
        self.store.idempotency = self._work.idempotency
        self._work = self._work.copy()
        self.products = MemoryProductRepository(self._work)
        self.idempotency = MemoryIdempotencyStore(self._work)
        self.published.extend(self.pending)
        self.pending = []
        self.commits += 1

    def rollback(self) -> None:
        self.pending = []
        self._work = None
