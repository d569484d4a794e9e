"""A small event store on SQLAlchemy Core: append-only streams in the service's own database,
written in the same transaction as the outbox row that publishes each event (ADR 0029).

The log is one table: a global `position` the database assigns (autoincrement), the stream id,
the event's 1-based `version` in its stream, its type, the schema version of its data, the
data (JSON), when it occurred and what caused it. `UNIQUE (stream, version)` is the optimistic
concurrency check: two writers that both read version N and append N+1 cannot both commit.

Positions are read by a feed (`read_after`) whose readers remember the last position they saw,
so a position must never become visible after a higher one: on PostgreSQL an append takes a
transaction-scoped advisory lock first (appends commit one at a time, in position order); on
SQLite writes are serialised by the database anyway.

Events are read back through `Upcasters`: an event stored under an older schema version is
brought to the current one, step by step, before anyone folds it.
"""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    func,
    select,
    text,
)
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from .messaging.events import Event
from .messaging.outbox import outbox_row

__all__ = [
    "ConcurrencyConflict",
    "EventStore",
    "NewEvent",
    "RecordedEvent",
    "Upcasters",
    "event_log_table",
    "format_time",
    "parse_time",
]


def format_time(value: datetime) -> str:
    """The one string form of an event time: UTC, microseconds, `Z` (sorts as it compares)."""
    return value.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def parse_time(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def event_log_table(metadata: MetaData, name: str) -> Table:
    """The event log, added to the service's metadata (created by its migrations)."""
    return Table(
        name,
        metadata,
        Column("position", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
        Column("event_id", String(64), nullable=False, unique=True),
        Column("stream_id", String(64), nullable=False),
        Column("version", Integer, nullable=False),
        Column("type", String(200), nullable=False),
        Column("schema_version", Integer, nullable=False),
        Column("data", JSON, nullable=False),
        Column("occurred_at", String(40), nullable=False),
        Column("cause", String(200)),
        # Also the index that loads a stream in version order.
        UniqueConstraint("stream_id", "version", name=f"uq_{name}_stream_version"),
        sqlite_autoincrement=True,  # never reuse a position
    )


class ConcurrencyConflict(Exception):
    """Another writer appended to the stream since it was read: nothing was appended."""

    def __init__(self, stream: str, expected_version: int) -> None:
        super().__init__(f"stream {stream} moved past version {expected_version}")
        self.stream = stream
        self.expected_version = expected_version


@dataclass(frozen=True)
class NewEvent:
    """An event to append; `schema_version` is the current one for its type (Upcasters)."""

    type: str
    data: dict[str, Any]
    occurred_at: datetime
    id: str = field(default_factory=lambda: uuid.uuid4().hex)


@dataclass(frozen=True)
class RecordedEvent:
    position: int
    stream: str
    version: int
    type: str
    schema_version: int
    data: dict[str, Any]
    occurred_at: str
    cause: str | None
    id: str

    @property
    def at(self) -> datetime:
        return parse_time(self.occurred_at)

    def envelope(self) -> dict[str, Any]:
        """The published body (`chassis.messaging.Event.body`), as the feed serves it."""
        return self.message().body()

    def message(self, correlation_id: str | None = None) -> Event:
        return Event(
            type=self.type,
            data=self.data,
            id=self.id,
            occurred_at=self.occurred_at,
            correlation_id=correlation_id,
            stream=self.stream,
            version=self.version,
            position=self.position,
        )


Upcaster = Callable[[dict[str, Any]], dict[str, Any]]


class Upcasters:
    """The current schema version of each event type and the steps from older ones.

    `register(type, 1)` decorates the function that turns a version-1 `data` into version 2;
    the current version of a type is one past its newest step (1 when it has none)."""

    def __init__(self) -> None:
        self._steps: dict[tuple[str, int], Upcaster] = {}
        self._current: dict[str, int] = {}

    def register(self, event_type: str, from_version: int) -> Callable[[Upcaster], Upcaster]:
        def decorate(fn: Upcaster) -> Upcaster:
            self._steps[(event_type, from_version)] = fn
            self._current[event_type] = max(self.current(event_type), from_version + 1)
            return fn

        return decorate

    def current(self, event_type: str) -> int:
        return self._current.get(event_type, 1)

    def upcast(self, event_type: str, version: int, data: dict[str, Any]) -> dict[str, Any]:
        while version < self.current(event_type):
            step = self._steps.get((event_type, version))
            if step is None:
                raise LookupError(f"no upcaster for {event_type} v{version}")
            data = step(dict(data))
            version += 1
        return data


class EventStore:
    """Appends to and reads one event log; every append also writes its outbox rows."""

    def __init__(self, log: Table, outbox: Table, upcasters: Upcasters | None = None) -> None:
        self.log = log
        self.outbox = outbox
        self.upcasters = upcasters or Upcasters()
        self._lock_key = zlib.crc32(f"portico.eventlog.{log.fullname}".encode()) - 2**31
        # Positions back in the order of the rows (SQLAlchemy's "insertmanyvalues").
        self._insert = log.insert().returning(log.c.position, sort_by_parameter_order=True)
        self._outbox_insert = outbox.insert()

    async def append(
        self,
        conn: AsyncConnection,
        stream: str,
        expected_version: int,
        events: Sequence[NewEvent],
        *,
        cause: str | None = None,
        correlation_id: str | None = None,
    ) -> list[RecordedEvent]:
        """Append `events` after `expected_version` in this transaction, with their outbox
        rows; ConcurrencyConflict (roll back) when the stream moved on meanwhile."""
        if not events:
            return []
        if conn.dialect.name == "postgresql":
            await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": self._lock_key})
        cause = cause[:200] if cause else None
        rows = [
            {
                "event_id": new.id,
                "stream_id": stream,
                "version": version,
                "type": new.type,
                "schema_version": self.upcasters.current(new.type),
                "data": new.data,
                "occurred_at": format_time(new.occurred_at),
                "cause": cause,
            }
            for version, new in enumerate(events, start=expected_version + 1)
        ]
        try:  # one statement for every event (and one for their outbox rows)
            positions = (await conn.execute(self._insert, rows)).scalars().all()
        except IntegrityError as exc:
            raise ConcurrencyConflict(stream, expected_version) from exc
        recorded = [
            RecordedEvent(
                position=position,
                stream=stream,
                version=row["version"],
                type=row["type"],
                schema_version=row["schema_version"],
                data=row["data"],
                occurred_at=row["occurred_at"],
                cause=cause,
                id=row["event_id"],
            )
            for position, row in zip(positions, rows, strict=True)
        ]
        await conn.execute(
            self._outbox_insert, [outbox_row(e.message(correlation_id)) for e in recorded]
        )
        return recorded

    def _recorded(self, r: Any) -> RecordedEvent:
        return RecordedEvent(
            position=r.position,
            stream=r.stream_id,
            version=r.version,
            type=r.type,
            schema_version=self.upcasters.current(r.type),
            data=self.upcasters.upcast(r.type, r.schema_version, r.data),
            occurred_at=r.occurred_at,
            cause=r.cause,
            id=r.event_id,
        )

    async def load(self, conn: AsyncConnection, stream: str) -> list[RecordedEvent]:
        """Every event of `stream` in version order, upcast to the current schemas."""
        stmt = select(self.log).where(self.log.c.stream_id == stream).order_by(self.log.c.version)
        return [self._recorded(r) for r in await conn.execute(stmt)]

    async def read_after(
        self, conn: AsyncConnection, after: int, limit: int
    ) -> tuple[list[RecordedEvent], int]:
        """Up to `limit` events with a position above `after`, in order, and the highest
        position in the log now (0 when empty)."""
        stmt = (
            select(self.log)
            .where(self.log.c.position > after)
            .order_by(self.log.c.position)
            .limit(limit)
        )
        events = [self._recorded(r) for r in await conn.execute(stmt)]
        last = (await conn.execute(select(func.max(self.log.c.position)))).scalar()
        return events, int(last or 0)
