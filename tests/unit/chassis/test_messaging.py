"""chassis.messaging without an external broker: SQLite files and kombu's in-process
memory transport (fine for one process; production and integration tests use RabbitMQ)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from kombu import Connection, Producer, Queue, binding
from sqlalchemy import Engine, MetaData, Table, func, select

from chassis import ConfigError, correlation_id, create_db_engine, sqlite_url
from chassis.messaging import (
    BrokerSettings,
    Event,
    EventConsumer,
    OutboxRelay,
    connect,
    events_exchange,
    outbox_insert,
    outbox_table,
)
from tests.support.brokers import messaging_tables, record_effect
from tests.support.waiting import wait_until


@pytest.fixture
def broker() -> BrokerSettings:
    tag = uuid.uuid4().hex[:8]
    return BrokerSettings(url="memory://", exchange=f"ex.{tag}", queue_prefix=f"{tag}.")


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_db_engine(sqlite_url(tmp_path / "svc.db"))
    yield engine
    engine.dispose()


@pytest.fixture
def outbox(engine: Engine) -> Table:
    metadata = MetaData()
    table = outbox_table(metadata)
    metadata.create_all(engine)
    return table


def collect(broker: BrokerSettings, name: str, keys: list[str]) -> Queue:
    """Declare a plain queue bound to `keys` before publishing (topic exchanges drop
    messages nobody is bound for)."""
    ex = events_exchange(broker)
    q = Queue(f"{broker.queue_prefix}{name}", bindings=[binding(ex, routing_key=k) for k in keys])
    with connect(broker) as conn:
        ex.bind(conn.default_channel).declare()
        q.bind(conn.default_channel).declare()
    return q


def drain(broker: BrokerSettings, q: Queue) -> list[tuple[dict, dict]]:
    got: list[tuple[dict, dict]] = []
    with connect(broker) as conn:
        while (msg := q.bind(conn.default_channel).get(no_ack=True)) is not None:
            got.append((orjson.loads(msg.body), dict(msg.headers)))
    return got


# -- the envelope and settings ------------------------------------------------------------


def test_event_round_trip_keeps_every_field() -> None:
    token = correlation_id.set("req-42")
    try:
        event = Event("order.created", {"order_id": "o1", "total": "9.50"})
    finally:
        correlation_id.reset(token)
    assert event.correlation_id == "req-42"
    assert len(event.id) == 32 and event.occurred_at.endswith("Z")
    assert set(orjson.loads(event.to_json())) == {"id", "type", "occurred_at", "data"}
    back = Event.from_message(event.to_json(), event.headers())
    assert back == event


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", b'{"id": "x", "type": "t", "occurred_at": "z"}', b'{"id": 1}'],
)
def test_malformed_bodies_are_rejected(body: bytes) -> None:
    with pytest.raises(ValueError):
        Event.from_message(body, {})


def test_broker_settings_from_env() -> None:
    assert BrokerSettings.from_env({}) == BrokerSettings()
    s = BrokerSettings.from_env(
        {
            "PORTICO_BROKER_URL": "amqp://guest:guest@127.0.0.1:5672//",
            "PORTICO_EVENTS_EXCHANGE": "x",
            "PORTICO_QUEUE_PREFIX": "p.",
            "PORTICO_MAX_DELIVERIES": "3",
        }
    )
    assert (s.url, s.exchange, s.queue_prefix, s.max_deliveries) == (
        "amqp://guest:guest@127.0.0.1:5672//",
        "x",
        "p.",
        3,
    )
    assert not s.is_redis and BrokerSettings().is_redis
    with pytest.raises(ConfigError) as err:
        BrokerSettings.from_env({"PORTICO_BROKER_URL": "memory://", "PORTICO_MAX_DELIVERIES": "0"})
    assert "PORTICO_BROKER_URL" in str(err.value) and "PORTICO_MAX_DELIVERIES" in str(err.value)


# -- outbox and relay ---------------------------------------------------------------------


def test_rolled_back_transaction_publishes_nothing(
    engine: Engine, outbox: Table, broker: BrokerSettings
) -> None:
    q = collect(broker, "all", ["#"])
    with pytest.raises(RuntimeError), engine.begin() as conn:
        conn.execute(outbox_insert(outbox, Event("order.created", {"n": 1})))
        raise RuntimeError("the state change failed")
    relay = OutboxRelay(engine, outbox, broker)
    assert relay.pending() == 0
    assert relay.run_once() == 0
    assert drain(broker, q) == []


def test_relay_publishes_in_insertion_order_once(
    engine: Engine, outbox: Table, broker: BrokerSettings
) -> None:
    q = collect(broker, "orders", ["order.*"])
    events = [Event("order.created", {"n": i}, correlation_id=f"c{i}") for i in range(7)]
    with engine.begin() as conn:
        for event in events[:4]:
            conn.execute(outbox_insert(outbox, event))
    with engine.begin() as conn:
        for event in events[4:]:
            conn.execute(outbox_insert(outbox, event))
    relay = OutboxRelay(engine, outbox, broker, batch_size=3)
    assert [relay.run_once() for _ in range(4)] == [3, 3, 1, 0]
    assert relay.pending() == 0
    got = drain(broker, q)
    assert [body["data"]["n"] for body, _ in got] == list(range(7))
    assert [h["correlation_id"] for _, h in got] == [f"c{i}" for i in range(7)]
    assert got[0][0] == events[0].body()


def test_relay_thread_publishes_after_wake_and_stops(
    engine: Engine, outbox: Table, broker: BrokerSettings
) -> None:
    q = collect(broker, "all", ["#"])
    relay = OutboxRelay(engine, outbox, broker, poll_interval=30)  # only wake() can help
    relay.start()
    try:
        with engine.begin() as conn:
            conn.execute(outbox_insert(outbox, Event("stock.low", {"sku": "A"})))
        relay.wake()
        wait_until(lambda: relay.published == 1, 5, "the relay to publish")
    finally:
        relay.stop()
    assert len(drain(broker, q)) == 1


def test_a_foreign_lease_holds_other_relays_back(
    engine: Engine, outbox: Table, broker: BrokerSettings
) -> None:
    collect(broker, "all", ["#"])
    with engine.begin() as conn:
        conn.execute(outbox_insert(outbox, Event("a.b", {})))
        conn.execute(outbox.update().values(claimed_by="someone", claimed_until=9e12))
    assert OutboxRelay(engine, outbox, broker).run_once() == 0
    with engine.begin() as conn:  # the other relay died; its lease ran out
        conn.execute(outbox.update().values(claimed_until=0))
    assert OutboxRelay(engine, outbox, broker).run_once() == 1


# -- consumer and inbox -------------------------------------------------------------------


def publish_raw(broker: BrokerSettings, event: Event, times: int = 1) -> None:
    ex = events_exchange(broker)
    with connect(broker) as conn:
        producer = Producer(conn.default_channel)
        for _ in range(times):
            producer.publish(
                event.to_json(),
                exchange=ex,
                routing_key=event.type,
                headers=event.headers(),
                content_type="application/json",
                content_encoding="utf-8",
                declare=[ex],
            )


def count(engine: Engine, table: Table) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def test_inbox_skips_a_redelivered_event(engine: Engine, broker: BrokerSettings) -> None:
    metadata, inbox, effects = messaging_tables()
    metadata.create_all(engine)
    seen: list[str | None] = []

    def handler(event: Event, conn: object) -> None:
        seen.append(correlation_id.get())
        record_effect(effects)(event, conn)  # type: ignore[arg-type]

    consumer = EventConsumer("notes", ["order.*"], handler, engine, inbox, broker)
    consumer.declare()
    event = Event("order.confirmed", {"order_id": "o1"}, correlation_id="req-7")
    publish_raw(broker, event, times=2)
    publish_raw(broker, Event("payment.captured", {}))  # not bound: never arrives
    consumer.start()
    try:
        wait_until(lambda: consumer.processed + consumer.duplicates == 2, 5, "both deliveries")
    finally:
        consumer.stop()
    assert (consumer.processed, consumer.duplicates) == (1, 1)
    assert count(engine, effects) == 1 and count(engine, inbox) == 1
    assert seen == ["req-7"]  # the handler ran under the event's correlation id


def test_poison_message_goes_to_the_dead_letter_queue(
    engine: Engine, broker: BrokerSettings
) -> None:
    metadata, inbox, effects = messaging_tables()
    metadata.create_all(engine)
    calls: list[str] = []

    def handler(event: Event, conn: object) -> None:
        calls.append(event.id)
        record_effect(effects)(event, conn)  # type: ignore[arg-type]
        raise ValueError("cannot handle this")

    broker = broker.replace(max_deliveries=3)
    consumer = EventConsumer("poison", ["x.*"], handler, engine, inbox, broker, retry_delay=0)
    consumer.declare()
    event = Event("x.y", {"bad": True})
    publish_raw(broker, event)
    with connect(broker) as conn:  # a body that is not an event at all: straight to the DLQ
        Producer(conn.default_channel).publish(
            b"{oops",
            exchange=events_exchange(broker),
            routing_key="x.z",
            content_type="application/json",
            content_encoding="utf-8",
        )
    consumer.start()
    try:
        wait_until(lambda: consumer.dead_lettered == 2, 5, "two dead letters")
    finally:
        consumer.stop()
    assert calls == [event.id] * 3 and consumer.retried == 2
    assert count(engine, effects) == 0 and count(engine, inbox) == 0  # every attempt rolled back
    dead = []
    with Connection("memory://") as conn:
        q = Queue(consumer.dlq_name).bind(conn.default_channel)
        while (msg := q.get(no_ack=True)) is not None:
            dead.append(msg)
    assert len(dead) == 2
    poison = next(m for m in dead if m.body != b"{oops")
    assert orjson.loads(poison.body) == event.body()
    assert poison.headers["x-portico-deliveries"] == 3
    assert "cannot handle this" in poison.headers["x-portico-error"]
    assert consumer.processed == 0


def test_database_outage_requeues_without_counting(engine: Engine, broker: BrokerSettings) -> None:
    from sqlalchemy.exc import OperationalError

    metadata, inbox, effects = messaging_tables()
    metadata.create_all(engine)
    outages = [OperationalError("INSERT", {}, Exception("database is locked"))] * 2

    def handler(event: Event, conn: object) -> None:
        if outages:
            raise outages.pop()
        record_effect(effects)(event, conn)  # type: ignore[arg-type]

    broker = broker.replace(max_deliveries=1)  # one counted failure would dead-letter it
    consumer = EventConsumer("db", ["a.*"], handler, engine, inbox, broker)
    consumer.declare()
    publish_raw(broker, Event("a.b", {}))
    consumer.start()
    try:
        wait_until(lambda: consumer.processed == 1, 5, "processing after the outage")
    finally:
        consumer.stop()
    assert consumer.dead_lettered == 0 and count(engine, effects) == 1
