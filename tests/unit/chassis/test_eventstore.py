"""`chassis.eventstore` on SQLite: optimistic concurrency, order, upcasting, the outbox rows,
and the envelope fields of `chassis.messaging.Event` (omitted unless set)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from chassis.db import create_async_db_engine
from chassis.eventstore import EventStore, Upcasters
from chassis.messaging import Event
from tests.support.eventstore import LOG, OUTBOX, create, event, race_two_writers
from tests.support.relay import captured_messages


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    engine = create_async_db_engine(f"sqlite+aiosqlite:///{tmp_path / 'log.db'}")
    await create(engine)
    yield engine
    await engine.dispose()


async def test_two_writers_never_both_append_version_n(engine: AsyncEngine) -> None:
    assert await race_two_writers(engine) == ["appended", "conflict"]
    async with engine.connect() as conn:
        rows = (await conn.execute(select(LOG.c.version, LOG.c.data))).all()
    assert [r.version for r in rows] == [1, 2] and len({r.data["n"] for r in rows}) == 2


async def test_positions_versions_and_the_outbox(engine: AsyncEngine) -> None:
    store = EventStore(LOG, OUTBOX)
    async with engine.begin() as conn:
        a = await store.append(conn, "a", 0, [event("x.one"), event("x.two")], cause="test")
        b = await store.append(conn, "b", 0, [event("x.one")], correlation_id="cid-1")
        c = await store.append(conn, "a", 2, [event("x.three")])
    assert [(e.stream, e.version, e.position) for e in a + b + c] == [
        ("a", 1, 1),
        ("a", 2, 2),
        ("b", 1, 3),
        ("a", 3, 4),
    ]
    async with engine.connect() as conn:
        assert [e.type for e in await store.load(conn, "a")] == ["x.one", "x.two", "x.three"]
        page, last = await store.read_after(conn, 1, 2)
        assert [e.position for e in page] == [2, 3] and last == 4
        assert await store.read_after(conn, 4, 10) == ([], 4)
    sent = captured_messages(engine.url, OUTBOX)
    assert [(m["stream"], m["version"], m["position"]) for m in sent] == [
        ("a", 1, 1),
        ("a", 2, 2),
        ("b", 1, 3),
        ("a", 3, 4),
    ]
    assert sent[0] == a[0].envelope() and sent[0]["id"] == a[0].id


async def test_an_old_event_is_upcast_when_read(engine: AsyncEngine) -> None:
    """Written as v1 of `order.created` (no payment_method), read as v2 after the change."""
    old = EventStore(LOG, OUTBOX, Upcasters())  # the schema before: v1 everywhere
    async with engine.begin() as conn:
        await old.append(conn, "o-1", 0, [event("order.created", order_id="o-1")])
    new = Upcasters()

    @new.register("order.created", 1)
    def _v2(data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "payment_method": "unknown"}

    async with engine.connect() as conn:
        (read,) = await EventStore(LOG, OUTBOX, new).load(conn, "o-1")
        stored = (await conn.execute(select(LOG.c.schema_version, LOG.c.data))).one()
    assert read.data == {"order_id": "o-1", "payment_method": "unknown"}
    assert read.schema_version == 2
    assert stored.schema_version == 1 and "payment_method" not in stored.data  # immutable
    with pytest.raises(LookupError):
        Upcasters().upcast("x", 0, {})


def test_the_envelope_fields_are_optional_and_round_trip() -> None:
    plain = Event("payment.captured", {"a": 1})
    assert set(plain.body()) == {"id", "type", "occurred_at", "data"}
    placed = Event("order.created", {"a": 1}, stream="o-1", version=2, position=7)
    body = placed.body()
    assert (body["stream"], body["version"], body["position"]) == ("o-1", 2, 7)
    back = Event.from_message(placed.to_json(), {})
    assert (back.stream, back.version, back.position) == ("o-1", 2, 7)
    assert Event.from_message(plain.to_json(), {}).position is None
    for bad in ({"version": "2"}, {"position": True}, {"stream": 5}):
        with pytest.raises(ValueError):
            Event.from_message({**plain.body(), **bad}, {})
