"""Outbox, relay, inbox and dead-lettering against real RabbitMQ and real PostgreSQL.

Every test has its own exchange and queue prefix (deleted afterwards) and its own database.
"""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest
from kombu import Queue
from sqlalchemy import Engine, Table, func, select, text

from chassis import create_async_db_engine, create_db_engine
from chassis.messaging import (
    BrokerSettings,
    Event,
    EventConsumer,
    OutboxRelay,
    connect,
    outbox_insert,
    outbox_table,
)
from tests.support.brokers import (
    child_consumer,
    cleanup,
    isolated_settings,
    messaging_tables,
    record_effect,
)
from tests.support.waiting import wait_until

pytestmark = pytest.mark.postgres

CONSUMER = "notifications"


@pytest.fixture
def broker(rabbitmq_url: str) -> Iterator[BrokerSettings]:
    settings = isolated_settings(rabbitmq_url, max_deliveries=3)
    yield settings
    name = f"{settings.queue_prefix}{CONSUMER}"
    cleanup(settings, [name, f"{name}.dlq"])


@pytest.fixture
def engine(postgres_url: str) -> Iterator[Engine]:
    engine = create_db_engine(postgres_url)
    yield engine
    engine.dispose()


@pytest.fixture
def tables(engine: Engine) -> tuple[Table, Table, Table]:
    metadata, inbox, effects = messaging_tables()
    outbox = outbox_table(metadata)
    metadata.create_all(engine)
    return outbox, inbox, effects


def count(engine: Engine, table: Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def emit(engine: Engine, outbox: Table, broker: BrokerSettings, *events: Event) -> None:
    """Write the events as a service would (one transaction) and relay them."""
    with engine.begin() as conn:
        for event in events:
            conn.execute(outbox_insert(outbox, event))
    assert OutboxRelay(engine, outbox, broker).run_once() == len(events)


def test_outbox_to_inbox_end_to_end(
    engine: Engine, tables: tuple[Table, Table, Table], broker: BrokerSettings
) -> None:
    outbox, inbox, effects = tables
    consumer = EventConsumer(CONSUMER, ["order.*"], record_effect(effects), engine, inbox, broker)
    consumer.declare()
    relay = OutboxRelay(engine, outbox, broker, poll_interval=5)
    relay.start()
    consumer.start()
    try:
        events = [Event("order.confirmed", {"n": i}, correlation_id="cid") for i in range(20)]
        with engine.begin() as conn:
            for event in events:
                conn.execute(outbox_insert(outbox, event))
            conn.execute(outbox_insert(outbox, Event("payment.captured", {})))  # not bound
        relay.wake()
        wait_until(lambda: consumer.processed == 20, 15, "20 events consumed")
        with engine.begin() as conn:  # the relay published twice (crash before marking)
            conn.execute(outbox.update().values(published_at=None))
        relay.wake()
        wait_until(lambda: consumer.duplicates == 20, 15, "20 duplicates skipped")
    finally:
        relay.stop()
        consumer.stop()
    assert count(engine, effects) == 20 and count(engine, inbox) == 20
    with engine.connect() as conn:  # handled in publication order (one consumer, prefetch 1)
        ids = conn.execute(select(effects.c.event_id).order_by(effects.c.n)).scalars().all()
    assert ids == [e.id for e in events]


@pytest.mark.parametrize("kill_point", ["before_commit", "after_commit"])
def test_consumer_killed_before_ack_gets_the_message_again_effect_once(
    kill_point: str,
    postgres_url: str,
    engine: Engine,
    tables: tuple[Table, Table, Table],
    broker: BrokerSettings,
) -> None:
    outbox, inbox, effects = tables
    event = Event("test.kill", {"order_id": "o-1"})
    with child_consumer(kill_point, postgres_url, broker, CONSUMER) as child:
        child.expect("ready")
        emit(engine, outbox, broker, event)
        child.expect("holding")  # the message is in the child's hands, not acknowledged
        child.kill()
    survivor = EventConsumer(CONSUMER, ["test.#"], record_effect(effects), engine, inbox, broker)
    survivor.start()
    try:
        wait_until(lambda: survivor.processed + survivor.duplicates == 1, 15, "the redelivery")
    finally:
        survivor.stop()
    assert count(engine, effects) == 1 and count(engine, inbox) == 1
    if kill_point == "before_commit":  # the child's transaction died with it
        assert (survivor.processed, survivor.duplicates) == (1, 0)
    else:  # the child committed: the inbox recognises the redelivered message
        assert (survivor.processed, survivor.duplicates) == (0, 1)


def test_poison_message_lands_in_the_dlq_after_max_deliveries(
    engine: Engine, tables: tuple[Table, Table, Table], broker: BrokerSettings
) -> None:
    outbox, inbox, effects = tables
    attempts: list[str] = []

    def handler(event: Event, conn: object) -> None:
        attempts.append(event.id)
        record_effect(effects)(event, conn)  # type: ignore[arg-type]
        raise RuntimeError("poison")

    consumer = EventConsumer(CONSUMER, ["order.*"], handler, engine, inbox, broker)
    consumer.declare()
    bad = Event("order.created", {"ok": False})
    consumer.start()
    try:
        emit(engine, outbox, broker, bad)
        wait_until(lambda: consumer.dead_lettered == 1, 15, "the dead letter")
    finally:
        consumer.stop()
    assert attempts == [bad.id] * broker.max_deliveries
    assert count(engine, effects) == 0 and count(engine, inbox) == 0
    with connect(broker) as conn:
        dlq = Queue(consumer.dlq_name).bind(conn.default_channel)
        msg = dlq.get(no_ack=True)
        assert msg is not None and dlq.get(no_ack=True) is None
    assert orjson.loads(msg.body) == bad.body()
    assert msg.headers["x-portico-deliveries"] == broker.max_deliveries
    assert "poison" in msg.headers["x-portico-error"]


async def test_async_engine_on_postgres(postgres_url: str) -> None:
    engine = create_async_db_engine(postgres_url)
    try:
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT 1"))).scalar_one() == 1
    finally:
        await engine.dispose()


def test_two_relays_on_one_table_take_turns(
    engine: Engine, tables: tuple[Table, Table, Table], broker: BrokerSettings
) -> None:
    """Two relays on one table (as in two gunicorn workers) publish each event once, in order."""
    outbox, inbox, effects = tables
    consumer = EventConsumer(CONSUMER, ["t.*"], record_effect(effects), engine, inbox, broker)
    consumer.declare()
    with engine.begin() as conn:
        for i in range(50):
            conn.execute(outbox_insert(outbox, Event("t.n", {"n": i})))
    relays = [OutboxRelay(engine, outbox, broker, batch_size=7) for _ in range(2)]
    for relay in relays:
        relay.start()
    try:
        wait_until(lambda: relays[0].pending() == 0, 15, "the outbox to drain")
    finally:
        for relay in relays:
            relay.stop()
    assert sum(r.published for r in relays) == 50
    consumer.start()
    try:
        wait_until(lambda: consumer.processed == 50, 15, "50 events")
    finally:
        consumer.stop()
    assert consumer.duplicates == 0
    with engine.connect() as conn:
        rows = conn.execute(select(outbox.c.data).order_by(outbox.c.seq)).scalars().all()
        handled = conn.execute(select(effects.c.event_id).order_by(effects.c.n)).scalars().all()
        ids = conn.execute(select(outbox.c.id).order_by(outbox.c.seq)).scalars().all()
    assert [r["n"] for r in rows] == list(range(50)) and handled == ids
