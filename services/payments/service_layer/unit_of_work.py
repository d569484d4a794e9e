"""Units of work: one transaction around a step of a use case, rolled back unless committed.

A step `record`s the events of its change; `commit` writes them with it (the SQL unit of work
into the outbox, in the same transaction, then wakes the relay) and forgets them on rollback.
"""

from __future__ import annotations

import abc
from types import TracebackType

from sqlalchemy import Connection, Engine, RootTransaction

from chassis.db import read_connection
from chassis.messaging import Event, OutboxWriter

from ..adapters.memory import MemoryPaymentRepository
from ..adapters.orm import outbox
from ..adapters.repository import AbstractPaymentRepository, PaymentRepository
from ..domain import Payment

__all__ = [
    "AbstractUnitOfWork",
    "InMemoryUnitOfWork",
    "SqlAlchemyUnitOfWork",
    "SqlReadUnitOfWork",
]


class AbstractUnitOfWork(abc.ABC):
    payments: AbstractPaymentRepository
    pending: list[Event]

    def __enter__(self) -> AbstractUnitOfWork:
        self.pending = []
        return self

    def record(self, event: Event) -> None:
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
    """One pooled connection and transaction per `with` block; reusable for another block."""

    def __init__(self, engine: Engine, events: OutboxWriter | None = None) -> None:
        self.engine = engine
        self.events = events or OutboxWriter(outbox)
        self._conn: Connection | None = None
        self._tx: RootTransaction | None = None

    def __enter__(self) -> AbstractUnitOfWork:
        self._conn = self.engine.connect()
        self._tx = self._conn.begin()
        self.payments = PaymentRepository(self._conn)
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
            self._conn = self._tx = None

    def commit(self) -> None:
        assert self._tx is not None and self._conn is not None, "commit outside a `with` block"
        events, self.pending = self.pending, []
        if events:
            self.events.write(self._conn, events)
        self._tx.commit()
        if events:
            self.events.committed()

    def rollback(self) -> None:
        self.pending = []
        if self._tx is not None and self._tx.is_active:
            self._tx.rollback()


class SqlReadUnitOfWork(AbstractUnitOfWork):
    """For use cases that only read: a pooled connection outside any transaction
    (`chassis.db.read_connection`: AUTOCOMMIT on PostgreSQL, so no BEGIN/ROLLBACK round trips
    around a single SELECT). It cannot commit."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._conn: Connection | None = None

    def __enter__(self) -> AbstractUnitOfWork:
        self._conn = read_connection(self.engine)
        self.payments = PaymentRepository(self._conn)
        return super().__enter__()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def commit(self) -> None:
        raise RuntimeError("a read unit of work cannot commit")

    def rollback(self) -> None:
        self.pending = []


class InMemoryUnitOfWork(AbstractUnitOfWork):
    """Works on a copy of `rows` and publishes it on commit, so rollback is real; the events
    of committed changes are in `published`, in order."""

    def __init__(self, rows: dict[str, Payment] | None = None) -> None:
        self.rows: dict[str, Payment] = {} if rows is None else rows
        self.commits = 0
        self.published: list[Event] = []
        self._work: dict[str, Payment] | None = None

    def __enter__(self) -> AbstractUnitOfWork:
        self._work = dict(self.rows)  # payments are frozen: a shallow copy is a snapshot
        self.payments = MemoryPaymentRepository(self._work)
        return super().__enter__()

    def commit(self) -> None:
        assert self._work is not None, "commit outside a `with` block"
        self.rows.clear()
        self.rows.update(self._work)
        self.published.extend(self.pending)
        self.pending = []
        self.commits += 1

    def rollback(self) -> None:
        self.pending = []
        if self._work is not None:
            self._work = dict(self.rows)
            self.payments = MemoryPaymentRepository(self._work)
