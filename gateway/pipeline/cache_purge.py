"""Purges from events: every gateway process hears the services' events and drops entries.

Services publish their events on the events exchange (`chassis.messaging`, a topic exchange,
routing key = event type; catalog's `product.created|updated|deleted`). Each gateway process
binds a queue of its own - exclusive and auto-deleted, named after the host and process - to
the event types its routes' `purge_on` name, so every process gets every event (fan-out) and
a process that goes away leaves no queue behind (RabbitMQ also expires it after a minute
without a consumer, `x-expires`). The same path serves both stores: with the in-memory store
each process purges its own entries; with Redis the first purge does the work and the others
find nothing left, which costs one small Lua call each. (Redis pub/sub was the alternative
for Redis deployments; it would need one process to relay broker events into Redis, one more
moving part, for no gain over the broker's own fan-out.)

kombu is synchronous: the consumer runs in a thread and hands each event to the event loop.
Messages are not acknowledged one by one (`no_ack`): a purge missed while a process was
disconnected is bounded by the entries' freshness, and on reconnect the process clears its
in-memory entries, since it cannot know what it missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterable
from typing import Any

from kombu import Consumer, Queue, binding

from chassis.messaging import BrokerSettings, Event, connect, events_exchange

__all__ = ["PurgeSubscriber"]

log = logging.getLogger("portico.gateway.cache")


class PurgeSubscriber:
    """One process's subscription to `keys` (event types); `on_event` runs on `loop`."""

    def __init__(
        self,
        broker: BrokerSettings,
        keys: Iterable[str],
        on_event: Callable[[Event], None],
        on_connect: Callable[[bool], None],
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self.broker = broker
        self.keys = frozenset(keys)
        self.on_event = on_event
        self.on_connect = on_connect  # called with True on a reconnect (events may be lost)
        self.loop = loop
        host = socket.gethostname().split(".")[0]
        self.queue_name = (
            f"{broker.queue_prefix}gateway.cache-purge.{host}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        )
        exchange = events_exchange(broker)
        amqp = not broker.is_redis
        self.queue = Queue(
            self.queue_name,
            bindings=[binding(exchange, routing_key=key) for key in sorted(self.keys)],
            durable=False,
            auto_delete=True,
            exclusive=amqp,
            queue_arguments={"x-expires": 60_000} if amqp else None,
        )
        self.exchange = exchange
        self.connected = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._connects = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._run, name="gateway-cache-purge", daemon=True
            )
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        backoff = 0.2
        while not self._stopping.is_set():
            try:
                with connect(self.broker) as conn:
                    conn.ensure_connection(max_retries=1, timeout=3)
                    channel = conn.channel()
                    self.exchange.bind(channel).declare()
                    self.queue.bind(channel).declare()
                    with Consumer(
                        channel,
                        queues=[self.queue],
                        on_message=self._on_message,
                        no_ack=True,
                        accept=["json"],
                    ):
                        self._connects += 1
                        self.loop.call_soon_threadsafe(self.on_connect, self._connects > 1)
                        self.connected.set()
                        backoff = 0.2
                        log.info("cache purges subscribed", extra={"queue": self.queue_name})
                        while not self._stopping.is_set():
                            try:
                                conn.drain_events(timeout=0.25)
                            except TimeoutError:
                                continue
                    with contextlib.suppress(Exception):  # gone already (auto-delete)
                        self.queue.bind(channel).delete()
            except Exception as exc:
                self.connected.clear()
                if self._stopping.is_set():
                    break
                log.warning(
                    "cache purge subscription lost its broker; reconnecting",
                    extra={"queue": self.queue_name, "retry_in": backoff, "error": str(exc)},
                )
                self._stopping.wait(backoff)
                backoff = min(backoff * 2, 5.0)
        self.connected.clear()

    def _on_message(self, message: Any) -> None:
        try:
            event = Event.from_message(message.body, dict(message.headers or {}))
        except ValueError:
            log.warning("malformed event ignored", extra={"queue": self.queue_name})
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: shutting down
            self.loop.call_soon_threadsafe(self.on_event, event)
