"""Transactional outbox: events are rows written with the state change, relayed afterwards.

A service inserts the event row in the same database transaction as the change it
describes, so an event exists exactly when the change committed. `OutboxRelay` publishes
unsent rows in insertion order and then marks them sent: delivery is at least once (a crash
between publish and mark re-publishes; consumers dedupe by event id in their inbox).

Several processes may run a relay on one table (gunicorn workers). They take turns through a
lease stored on the claimed rows: a relay claims a batch only while no other relay holds an
unexpired lease, so batches go out one at a time and in order, and a relay that dies just
lets its lease run out.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from kombu import Connection, Producer
from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    DateTime,
    Engine,
    Float,
    Index,
    Insert,
    Integer,
    MetaData,
    String,
    Table,
    exists,
    func,
    select,
    text,
    update,
)
from sqlalchemy import (
    Connection as DbConnection,
)

from .. import tracing
from .events import CONTENT_TYPE, BrokerSettings, Event, check_broker, connect, events_exchange

__all__ = [
    "OutboxRelay",
    "OutboxWriter",
    "RelayHandle",
    "broker_ready",
    "outbox_insert",
    "outbox_row",
    "outbox_table",
    "start_relay",
]

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncConnection

log = logging.getLogger(__name__)

_TRACEPARENT_KEY = "_traceparent"  # reserved key in outbox `data`, never published
# Reserved key in outbox `data` for an event-sourced event's stream/version/position: the
# relay moves them into the envelope (no outbox schema change for any service, ADR 0029).
_ENVELOPE_KEY = "_envelope"
_RETRY_POLICY = {"max_retries": 2, "interval_start": 0.1, "interval_step": 0.5, "interval_max": 1}


def outbox_table(metadata: MetaData) -> Table:
    """The `outbox` table, added to the service's own metadata (created by its `init`)."""
    return Table(
        "outbox",
        metadata,
        Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True),
        Column("id", String(64), nullable=False, unique=True),
        Column("type", String(200), nullable=False),
        Column("occurred_at", String(40), nullable=False),
        Column("correlation_id", String(128)),
        Column("data", JSON, nullable=False),
        Column("claimed_by", String(64)),
        Column("claimed_until", Float),
        Column("published_at", DateTime(timezone=True)),
        Index("ix_outbox_published_at_seq", "published_at", "seq"),
        sqlite_autoincrement=True,  # never reuse a seq: order is insertion order
    )


def outbox_row(event: Event) -> dict[str, Any]:
    """The outbox row's values for `event`: for a prepared `table.insert()` executed with
    parameters (one statement for many rows, compiled once).

    With tracing on, the current `traceparent` rides in the stored data under a reserved key
    (no schema change) and the relay moves it into the message headers; an event-sourced
    event's stream/version/position ride under another (ADR 0029).
    """
    data = event.data
    if event.stream is not None or event.version is not None or event.position is not None:
        envelope = {"stream": event.stream, "version": event.version, "position": event.position}
        data = {**data, _ENVELOPE_KEY: envelope}
    if tracing.ENABLED:
        traceparent = tracing.current_traceparent()
        if traceparent:
            data = {**data, _TRACEPARENT_KEY: traceparent}
    return {
        "id": event.id,
        "type": event.type,
        "occurred_at": event.occurred_at,
        "correlation_id": event.correlation_id,
        "data": data,
    }


def outbox_insert(table: Table, event: Event) -> Insert:
    """The INSERT to execute in the same transaction as the state change (`outbox_row`)."""
    return table.insert().values(**outbox_row(event))


class OutboxWriter:
    """Writes a service's events into its outbox; `committed()` nudges the relay at once.

    The one writer every service uses, so the row format and the wake-up stay in the chassis:
    the service builds `Event`s and calls `write` (sync connection) or `write_async`
    (AsyncConnection) inside the transaction that makes the change, then `committed()` after
    the commit. `wake` is set once the relay runs (`start_relay(...).relay.wake`); until then,
    or without a broker, rows wait for the relay's next poll.
    """

    def __init__(self, table: Table, wake: Callable[[], None] | None = None) -> None:
        self.table = table
        self.wake = wake

    def write(self, conn: DbConnection, events: Iterable[Event]) -> None:
        for event in events:
            conn.execute(outbox_insert(self.table, event))

    async def write_async(self, conn: AsyncConnection, events: Iterable[Event]) -> None:
        for event in events:
            await conn.execute(outbox_insert(self.table, event))

    def committed(self) -> None:
        if self.wake is not None:
            self.wake()


class OutboxRelay:
    """Publishes unsent outbox rows to the events exchange, in order, at least once."""

    def __init__(
        self,
        engine: Engine,
        table: Table,
        broker: BrokerSettings,
        *,
        poll_interval: float = 0.2,
        batch_size: int = 100,
        lease: float = 30.0,
    ) -> None:
        self.engine = engine
        self.table = table
        self.broker = broker
        self.poll_interval = poll_interval
        self.batch_size = batch_size
        self.lease = lease
        self.owner = uuid.uuid4().hex
        self.published = 0  # events published by this relay, for metrics and tests
        self._exchange = events_exchange(broker)
        self._conn: Connection | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        # One PostgreSQL advisory lock per outbox table serialises the claim statement.
        self._lock_key = zlib.crc32(f"portico.outbox.{table.fullname}".encode()) - 2**31

    # -- one pass -------------------------------------------------------------------------

    def run_once(self) -> int:
        """Publish one batch of unsent events; return how many went out."""
        with self._lock:
            rows = self._claim()
            if not rows:
                return 0
            sent: list[int] = []
            try:
                producer = self._producer()
                for row in rows:
                    data = row.data
                    traceparent = None
                    envelope: dict[str, Any] = {}
                    if _TRACEPARENT_KEY in data or _ENVELOPE_KEY in data:
                        data = dict(data)
                        traceparent = data.pop(_TRACEPARENT_KEY, None)
                        envelope = data.pop(_ENVELOPE_KEY, None) or {}
                    event = Event(
                        type=row.type,
                        data=data,
                        id=row.id,
                        occurred_at=row.occurred_at,
                        correlation_id=row.correlation_id,
                        stream=envelope.get("stream"),
                        version=envelope.get("version"),
                        position=envelope.get("position"),
                    )
                    if tracing.ENABLED:
                        headers = event.headers()
                        with tracing.producer_span(
                            f"{event.type} publish",
                            traceparent,
                            headers,
                            **{"messaging.system": "kombu", "messaging.message.id": event.id},
                        ):
                            self._publish(producer, event, headers)
                    else:
                        self._publish(producer, event, event.headers())
                    sent.append(row.seq)
            except Exception:
                self._drop_connection()
                raise
            finally:
                self._mark_published(sent)
            self.published += len(sent)
            return len(sent)

    def _publish(self, producer: Producer, event: Event, headers: dict[str, object]) -> None:
        producer.publish(
            event.to_json(),
            exchange=self._exchange,
            routing_key=event.type,
            headers=headers,
            content_type=CONTENT_TYPE,
            content_encoding="utf-8",
            delivery_mode=2,
            message_id=event.id,
            declare=[self._exchange],
            retry=True,
            retry_policy=_RETRY_POLICY,
        )

    def pending(self) -> int:
        """Unsent events (readiness and tests)."""
        with self.engine.connect() as conn:
            stmt = select(func.count()).where(self.table.c.published_at.is_(None))
            return int(conn.execute(stmt).scalar_one())

    def _claim(self) -> list:  # type: ignore[type-arg]
        t = self.table
        now = time.time()
        unsent = t.c.published_at.is_(None)
        foreign_lease = exists().where(
            unsent,
            t.c.claimed_by.is_not(None),
            t.c.claimed_by != self.owner,
            t.c.claimed_until > now,
        )
        batch = select(t.c.seq).where(unsent).order_by(t.c.seq).limit(self.batch_size)
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": self._lock_key})
            # One UPDATE first: on SQLite it takes the write lock before it reads.
            conn.execute(
                update(t)
                .where(t.c.seq.in_(batch.scalar_subquery()), ~foreign_lease)
                .values(claimed_by=self.owner, claimed_until=now + self.lease)
            )
            mine = select(t).where(unsent, t.c.claimed_by == self.owner)
            return list(conn.execute(mine.order_by(t.c.seq).limit(self.batch_size)).all())

    def _mark_published(self, seqs: list[int]) -> None:
        if not seqs:
            return
        t = self.table
        with self.engine.begin() as conn:
            conn.execute(
                update(t)
                .where(t.c.seq.in_(seqs))
                .values(published_at=datetime.now(UTC), claimed_by=None, claimed_until=None)
            )

    def _producer(self) -> Producer:
        if self._conn is None:
            self._conn = connect(self.broker)
        return Producer(self._conn.default_channel)

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.release()
            except Exception:  # already broken; nothing more to release
                log.debug("outbox relay: releasing a broken connection failed", exc_info=True)
            self._conn = None

    # -- background thread ----------------------------------------------------------------

    def start(self) -> None:
        """Poll in a daemon thread until `stop()`; `wake()` after a commit skips the wait."""
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._loop, name=f"outbox-relay-{self.table.fullname}", daemon=True
        )
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._lock.acquire(timeout=timeout):  # a publish stuck on a dead broker: leave it
            try:
                self._drop_connection()
            finally:
                self._lock.release()

    def _loop(self) -> None:
        backoff = self.poll_interval
        while not self._stopping.is_set():
            self._wake.clear()  # a wake() during the pass below makes the wait return at once
            try:
                self._run_until_drained()
                backoff = self.poll_interval
            except Exception:
                log.exception("outbox relay failed; retrying", extra={"retry_in": backoff})
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            self._wake.wait(self.poll_interval)

    def _run_until_drained(self) -> int:
        total = 0
        while not self._stopping.is_set():
            sent = self.run_once()
            total += sent
            if sent < self.batch_size:
                break
        return total


@dataclass
class RelayHandle:
    """A running relay and the blocking engine it owns; `stop` joins the thread, then disposes."""

    relay: OutboxRelay
    engine: Engine

    def stop(self) -> None:
        """Blocking (joins the relay thread): from async code call it in a worker thread."""
        try:
            self.relay.stop()
        finally:
            self.engine.dispose()


def start_relay(
    database_url: str, table: Table, broker: BrokerSettings | None = None
) -> RelayHandle:
    """A relay thread on its own blocking engine over the service's database (async URLs are
    mapped to their blocking driver), publishing to `broker` (default: from the environment)."""
    from ..db import create_db_engine, sync_url

    engine = create_db_engine(sync_url(database_url))
    relay = OutboxRelay(engine, table, broker or BrokerSettings.from_env())
    relay.start()
    return RelayHandle(relay, engine)


def broker_ready() -> None:
    """Readiness (blocking): the broker from the environment accepts a connection."""
    check_broker(BrokerSettings.from_env())
