"""Real brokers for messaging integration tests: RabbitMQ and Redis, isolated per test.

Like `external.py`: a broker that is down skips the test locally and fails it with CI=true.
Each test gets a unique exchange, queue prefix and (Redis) key prefix, and deletes exactly
what it created. The module also runs as the consumer child process that the kill tests
start and kill (`python -m tests.support.brokers ...`).
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from kombu import Connection
from sqlalchemy import Column, Integer, MetaData, String, Table
from sqlalchemy.engine import Connection as DbConnection

from chassis import create_db_engine
from chassis.messaging import BrokerSettings, Event, EventConsumer, connect, inbox_table
from tests.support.external import REDIS_URL, redis_up, unavailable

AMQP_URL = os.environ.get("PORTICO_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
ROOT = Path(__file__).resolve().parents[2]


def _reachable(url: str, what: str) -> None:
    try:
        with Connection(url, connect_timeout=2) as conn:
            conn.ensure_connection(max_retries=1, timeout=2)
    except Exception as exc:
        unavailable(what, exc)


def rabbitmq_reachable(url: str = AMQP_URL) -> str:
    _reachable(url, "RabbitMQ")
    return url


def redis_reachable(url: str = REDIS_URL) -> str:
    return redis_up(url)


def isolated_settings(url: str, **changes: Any) -> BrokerSettings:
    """Broker settings whose exchange, queues and Redis keys belong to this test alone."""
    tag = f"t{uuid.uuid4().hex[:10]}"
    settings = BrokerSettings(
        url=url,
        exchange=f"portico.test.{tag}",
        queue_prefix=f"{tag}.",
        key_prefix=f"portico-test:{tag}:",
    )
    return settings.replace(**changes)


def cleanup(settings: BrokerSettings, queues: list[str]) -> None:
    """Delete this test's queues and exchange (RabbitMQ) or its prefixed keys (Redis)."""
    if settings.is_redis:
        import redis

        client = redis.Redis.from_url(settings.url)
        try:
            keys = list(client.scan_iter(match=f"{settings.key_prefix}*", count=500))
            if keys:
                client.delete(*keys)
        finally:
            client.close()
        return
    with connect(settings) as conn:
        channel = conn.channel()
        for name in queues:
            channel.queue_delete(name)
        channel.exchange_delete(settings.exchange)


def messaging_tables() -> tuple[MetaData, Table, Table]:
    """An inbox and an `effects` table, where a handler's effect is one row per run."""
    metadata = MetaData()
    inbox = inbox_table(metadata)
    effects = Table(
        "effects",
        metadata,
        Column("n", Integer, primary_key=True),
        Column("event_id", String(64), nullable=False),
    )
    return metadata, inbox, effects


def record_effect(effects: Table) -> Callable[[Event, DbConnection], None]:
    def handler(event: Event, conn: DbConnection) -> None:
        conn.execute(effects.insert().values(event_id=event.id))

    return handler


class Child:
    """The consumer child process; its stdout lines arrive on a queue."""

    def __init__(self, mode: str, db_url: str, settings: BrokerSettings, name: str) -> None:
        args = [sys.executable, "-m", "tests.support.brokers", mode, db_url, name]
        self.proc = subprocess.Popen(
            args,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "CHILD_BROKER": json.dumps(asdict(settings))},
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())

    def expect(self, word: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or (self.proc.poll() is not None and self.lines.empty()):
                raise AssertionError(f"child never said {word!r} (exit {self.proc.poll()})")
            try:
                if self.lines.get(timeout=min(remaining, 0.5)) == word:
                    return
            except queue.Empty:
                continue

    def kill(self) -> None:
        """SIGKILL by PID: no cleanup, no ack, no rollback message to the database."""
        os.kill(self.proc.pid, 9)
        self.proc.wait(timeout=10)


@contextmanager
def child_consumer(mode: str, db_url: str, settings: BrokerSettings, name: str) -> Iterator[Child]:
    child = Child(mode, db_url, settings, name)
    try:
        yield child
    finally:
        if child.proc.poll() is None:
            child.kill()


def _child_main(mode: str, db_url: str, name: str) -> None:
    """Consume until the one message is in hand, say "holding", then block to be killed.

    before_commit: the handler has written its effect but the transaction is still open.
    after_commit: the transaction has committed but the message is not acknowledged.
    """
    settings = BrokerSettings(**json.loads(os.environ["CHILD_BROKER"]))
    _metadata, inbox, effects = messaging_tables()
    engine = create_db_engine(db_url)
    hold = threading.Event()

    def say(word: str) -> None:
        print(word, flush=True)

    def handler(event: Event, conn: DbConnection) -> None:
        conn.execute(effects.insert().values(event_id=event.id))
        if mode == "before_commit":
            say("holding")
            hold.wait()

    class HoldingConsumer(EventConsumer):
        def _ack(self, message: Any) -> None:
            if mode == "after_commit":
                say("holding")
                hold.wait()
            super()._ack(message)

    consumer = HoldingConsumer(name, ["test.#"], handler, engine, inbox, settings)
    consumer.start()
    if not consumer.connected.wait(15):
        sys.exit("child consumer could not connect")
    say("ready")
    hold.wait()


if __name__ == "__main__":
    _child_main(*sys.argv[1:4])
