"""Idempotent event consumer: an inbox of processed message ids in the consumer's database.

Each message is handled in one database transaction that first records (consumer, event id)
in the inbox and then runs the handler; the broker acknowledgement follows the commit. A
redelivered message (the consumer died before acking, or the relay published twice) finds
its id in the inbox and is acknowledged without running the handler again, so the effect
happens exactly once although delivery is at least once.

A handler that raises rolls the transaction back; the message is republished to the same
queue with its delivery count in a header (classic queues and Redis count nothing for us)
and, after `max_deliveries` failed attempts, moved to `<queue>.dlq` for a human to look at.
Database outages (OperationalError) are not the message's fault: such a message is requeued
after a growing pause and never counted towards the DLQ.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from kombu import Connection, Consumer, Exchange, Message, Producer, Queue, binding
from sqlalchemy import Column, DateTime, Engine, Index, MetaData, String, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection as DbConnection
from sqlalchemy.exc import InterfaceError, OperationalError

from .. import tracing
from ..logging import correlation_id
from .events import (
    CONTENT_TYPE,
    DELIVERIES_HEADER,
    ERROR_HEADER,
    BrokerSettings,
    Event,
    connect,
    events_exchange,
)

__all__ = ["EventConsumer", "Handler", "inbox_table"]

log = logging.getLogger(__name__)

Handler = Callable[[Event, DbConnection], None]
_DEFAULT_EXCHANGE = Exchange("")  # routes by queue name on RabbitMQ and kombu's redis transport


def inbox_table(metadata: MetaData) -> Table:
    """The `inbox` table, added to the consuming service's own metadata."""
    return Table(
        "inbox",
        metadata,
        Column("consumer", String(200), primary_key=True),
        Column("message_id", String(64), primary_key=True),
        Column("event_type", String(200), nullable=False),
        Column("processed_at", DateTime(timezone=True), nullable=False),
        # The retention purge picks old rows by it (chassis.retention; migration 0002).
        Index("ix_inbox_processed_at", "processed_at"),
    )


class EventConsumer:
    """Consumes one durable queue `<prefix><name>` bound to `bindings` on the events exchange."""

    def __init__(
        self,
        name: str,
        bindings: Sequence[str],
        handler: Handler,
        engine: Engine,
        inbox: Table,
        broker: BrokerSettings,
        *,
        retry_delay: float = 0.05,
        on_idle: Callable[[], None] | None = None,
    ) -> None:
        self.name = name
        # Called on the consumer's thread whenever the queue had nothing for a moment: every
        # message published before then has been handled (the read side's staleness).
        self.on_idle = on_idle
        self.handler = handler
        self.engine = engine
        self.inbox = inbox
        self.broker = broker
        self.retry_delay = retry_delay
        self.queue_name = f"{broker.queue_prefix}{name}"
        self.dlq_name = f"{self.queue_name}.dlq"
        self.exchange = events_exchange(broker)
        self.queue = Queue(
            self.queue_name,
            bindings=[binding(self.exchange, routing_key=key) for key in bindings],
            durable=True,
        )
        self.dead_letter_queue = Queue(
            self.dlq_name, exchange=_DEFAULT_EXCHANGE, routing_key=self.dlq_name, durable=True
        )
        # Counters for metrics, readiness and tests.
        self.processed = 0
        self.duplicates = 0
        self.retried = 0
        self.dead_lettered = 0
        self._db_failures = 0  # consecutive database outages, for the backoff
        self.connected = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle ------------------------------------------------------------------------

    def declare(self) -> None:
        """Create the exchange, the queue with its bindings and the DLQ (idempotent).

        `start()` does this too; call it earlier when events may be published before the
        consumer first runs, since a topic exchange drops messages no queue is bound for.
        """
        with connect(self.broker) as conn:
            conn.ensure_connection(max_retries=2, timeout=3)
            self._declare(conn.default_channel)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopping.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"event-consumer-{self.name}", daemon=True
        )
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop consuming; the message in hand finishes first. Bounded by `timeout`."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _declare(self, channel: Any) -> None:
        self.exchange.bind(channel).declare()
        self.queue.bind(channel).declare()
        self.dead_letter_queue.bind(channel).declare()

    def _run(self) -> None:
        backoff = 0.2
        while not self._stopping.is_set():
            try:
                with connect(self.broker) as conn:
                    conn.ensure_connection(max_retries=1, timeout=3)
                    channel = conn.channel()
                    self._declare(channel)
                    # prefetch 1: the handler republishes on this channel while a message is
                    # in hand, and a consumer that dies holds back at most one message.
                    with Consumer(
                        channel,
                        queues=[self.queue],
                        on_message=self._on_message,
                        prefetch_count=1,
                        accept=["json"],
                    ):
                        self.connected.set()
                        backoff = 0.2
                        log.info("event consumer started", extra={"queue": self.queue_name})
                        self._drain(conn)
            except Exception:
                self.connected.clear()
                if self._stopping.is_set():
                    break
                log.exception(
                    "event consumer lost its broker; reconnecting",
                    extra={"queue": self.queue_name, "retry_in": backoff},
                )
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)
        self.connected.clear()

    def _drain(self, conn: Connection) -> None:
        while not self._stopping.is_set():
            try:
                conn.drain_events(timeout=0.25)
            except TimeoutError:
                if self.on_idle is not None:
                    self.on_idle()

    # -- one message ----------------------------------------------------------------------

    def _on_message(self, message: Message) -> None:
        headers = dict(message.headers or {})
        try:
            event = Event.from_message(message.body, headers)
        except ValueError as exc:
            log.error("malformed event dead-lettered", extra={"queue": self.queue_name})
            self._dead_letter(message, headers, f"malformed: {exc}")
            return
        token = correlation_id.set(event.correlation_id)
        try:
            if tracing.ENABLED:
                with tracing.consumer_span(
                    f"{event.type} process",
                    headers,
                    service=self.name,  # its service's provider, if one is set up by that name
                    **{"messaging.system": "kombu", "messaging.destination.name": self.queue_name},
                ):
                    self._handle(message, event, headers)
            else:
                self._handle(message, event, headers)
        finally:
            correlation_id.reset(token)

    def _handle(self, message: Message, event: Event, headers: dict[str, Any]) -> None:
        try:
            with self.engine.begin() as conn:
                fresh = self._record(conn, event)
                if fresh:
                    self.handler(event, conn)
        except (OperationalError, InterfaceError):
            # The database is down or locked, not the message bad: wait and requeue without
            # counting, so an outage never dead-letters good events.
            self._db_failures += 1
            delay = min(0.1 * 2**self._db_failures, 5.0)
            log.warning(
                "database unavailable; requeueing",
                exc_info=True,
                extra={"event_id": event.id, "retry_in": delay},
            )
            self._stopping.wait(delay)
            message.requeue()
            return
        except Exception as exc:
            attempts = int(headers.get(DELIVERIES_HEADER, 0)) + 1
            extra = {"event_id": event.id, "event_type": event.type, "attempt": attempts}
            if attempts >= self.broker.max_deliveries:
                log.exception("event handler failed; dead-lettering", extra=extra)
                self._dead_letter(message, {**headers, DELIVERIES_HEADER: attempts}, repr(exc))
            else:
                log.warning("event handler failed; retrying", exc_info=True, extra=extra)
                self._stopping.wait(min(self.retry_delay * 2 ** (attempts - 1), 2.0))
                self._republish(message, self.queue_name, {**headers, DELIVERIES_HEADER: attempts})
                self.retried += 1
                self._ack(message)
            return
        self._db_failures = 0
        if fresh:
            self.processed += 1
        else:
            self.duplicates += 1
            log.info("duplicate event skipped", extra={"event_id": event.id})
        self._ack(message)

    def _record(self, conn: DbConnection, event: Event) -> bool:
        """Insert the inbox row; False when this consumer already processed the event."""
        dialect = conn.dialect.name
        values = {
            "consumer": self.name,
            "message_id": event.id,
            "event_type": event.type,
            "processed_at": datetime.now(UTC),
        }
        if dialect == "postgresql":
            stmt = postgresql.insert(self.inbox).values(values).on_conflict_do_nothing()
        elif dialect == "sqlite":
            stmt = sqlite.insert(self.inbox).values(values).on_conflict_do_nothing()
        else:  # pragma: no cover - only SQLite and PostgreSQL are supported
            raise RuntimeError(f"inbox: unsupported database {dialect}")
        # RETURNING, not rowcount: psycopg reports -1 for INSERT .. ON CONFLICT DO NOTHING.
        return conn.execute(stmt.returning(self.inbox.c.message_id)).first() is not None

    def _ack(self, message: Message) -> None:
        """Acknowledge after the commit (a separate method so tests can crash in between)."""
        message.ack()

    def _republish(self, message: Message, queue: str, headers: dict[str, Any]) -> None:
        Producer(message.channel).publish(
            message.body,
            exchange=_DEFAULT_EXCHANGE,
            routing_key=queue,
            headers=headers,
            content_type=CONTENT_TYPE,
            content_encoding="utf-8",
            delivery_mode=2,
        )

    def _dead_letter(self, message: Message, headers: dict[str, Any], reason: str) -> None:
        headers = {**headers, ERROR_HEADER: reason[:500], "x-portico-queue": self.queue_name}
        self._republish(message, self.dlq_name, headers)
        self.dead_lettered += 1
        self._ack(message)
