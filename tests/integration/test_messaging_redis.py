"""kombu's redis:// transport (the embedded default of `make up`) across processes.

Uses the local Redis with a key prefix of its own (deleted afterwards) and a SQLite file
shared by two processes, as the services run under `make up`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine, Table, func, select

from chassis import create_db_engine, sqlite_url
from chassis.messaging import BrokerSettings, Event, EventConsumer, OutboxRelay, outbox_insert
from chassis.messaging import outbox_table as make_outbox
from tests.support.brokers import (
    child_consumer,
    cleanup,
    isolated_settings,
    messaging_tables,
    record_effect,
)
from tests.support.waiting import wait_until

CONSUMER = "notifications"


@pytest.fixture
def broker(redis_broker_url: str) -> Iterator[BrokerSettings]:
    # A dead consumer's message comes back after the visibility timeout: keep it short here.
    settings = isolated_settings(redis_broker_url, visibility_timeout=1.0)
    yield settings
    cleanup(settings, [])
    client = redis.Redis.from_url(settings.url)
    try:
        assert not list(client.scan_iter(match=f"{settings.key_prefix}*"))
        assert not client.exists(f"_kombu.binding.{settings.exchange}")  # nothing unprefixed
    finally:
        client.close()


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return sqlite_url(tmp_path / "svc.db")


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    engine = create_db_engine(db_url)
    yield engine
    engine.dispose()


def count(engine: Engine, table: Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_redis_consumer_killed_after_commit_gets_the_message_again_effect_once(
    db_url: str, engine: Engine, broker: BrokerSettings
) -> None:
    metadata, inbox, effects = messaging_tables()
    outbox = make_outbox(metadata)
    metadata.create_all(engine)
    event = Event("test.kill", {"order_id": "o-1"})
    with child_consumer("after_commit", db_url, broker, CONSUMER) as child:
        child.expect("ready")
        with engine.begin() as conn:
            conn.execute(outbox_insert(outbox, event))
        assert OutboxRelay(engine, outbox, broker).run_once() == 1
        child.expect("holding")  # committed in the child, never acknowledged
        child.kill()
    survivor = EventConsumer(CONSUMER, ["test.#"], record_effect(effects), engine, inbox, broker)
    survivor.start()
    try:
        wait_until(lambda: survivor.duplicates == 1, 15, "the restored message")
        with engine.begin() as conn:  # and fresh events still flow
            conn.execute(outbox_insert(outbox, Event("test.next", {})))
        assert OutboxRelay(engine, outbox, broker).run_once() == 1
        wait_until(lambda: survivor.processed == 1, 15, "the next event")
    finally:
        survivor.stop()
    assert count(engine, effects) == 2 and count(engine, inbox) == 2
