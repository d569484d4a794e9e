"""Notifications' use cases against in-memory fakes (no database), and the fakes held to the
SQL adapters' contract."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.ext.asyncio import AsyncEngine

from chassis import create_db_engine, sqlite_url
from chassis.db import create_async_db_engine
from chassis.messaging import Event
from services.notifications.__main__ import migrate
from services.notifications.adapters.memory import (
    MemoryNotificationReader,
    MemoryNotificationWriter,
    MemoryStore,
)
from services.notifications.adapters.orm import notifications, outbox
from services.notifications.adapters.repository import (
    AbstractNotificationReader,
    AbstractNotificationWriter,
    NotificationReader,
    SqlNotificationWriter,
)
from services.notifications.domain import Message
from services.notifications.service_layer import queries
from services.notifications.service_layer.handlers import apply_event, handle_event
from services.notifications.service_layer.unit_of_work import InMemoryUnitOfWork
from services.notifications.settings import NotificationsSettings
from tests.support.migrations import migrated


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


def test_an_outcome_is_a_notification_for_the_orders_owner(store: MemoryStore) -> None:
    writer = MemoryNotificationWriter(store)
    assert apply_event(Event("order.created", {"order_id": "o1", "owner": "u1"}), writer) is None
    note = apply_event(Event("order.confirmed", {"order_id": "o1", "total": "9.90"}), writer)
    assert note is not None and note.owner == "u1" and note.kind == "order"
    assert list(store.notifications.values()) == [note]


def test_a_notification_before_its_owner_is_known_gets_the_owner_later(
    store: MemoryStore,
) -> None:
    writer = MemoryNotificationWriter(store)
    early = apply_event(Event("payment.captured", {"order_id": "o1", "amount": "1.00"}), writer)
    assert early is not None and early.owner is None
    apply_event(Event("order.created", {"order_id": "o1", "owner": "u1"}), writer)
    assert store.notifications[early.id].owner == "u1"


async def test_list_pages_newest_first_and_mark_read_is_the_owners(store: MemoryStore) -> None:
    writer, t0 = MemoryNotificationWriter(store), datetime(2026, 1, 1, tzinfo=UTC)
    message = Message("order", "s", "b")
    ids = []
    for i, owner in enumerate(["u1", "u1", "u1", "u2"]):
        at = t0 + timedelta(seconds=i)
        note = writer.record(
            owner=owner, message=message, event_type="t", event_id=f"e{i}", order_id=None, now=at
        )
        ids.append(note.id)
    uow = InMemoryUnitOfWork(store)
    page, after = await queries.list_notifications(lambda: uow, "u1", limit=2)
    assert [n.id for n in page] == [ids[2], ids[1]] and after == (page[-1].created_at, ids[1])
    rest, after = await queries.list_notifications(lambda: uow, "u1", before=after, limit=2)
    assert [n.id for n in rest] == [ids[0]] and after is None
    assert len((await queries.list_notifications(lambda: uow, None))[0]) == 4  # staff

    with pytest.raises(queries.NotificationNotFound):
        await queries.mark_read(lambda: uow, "u2", ids[0])  # another's: not found
    read = await queries.mark_read(lambda: uow, "u1", ids[0])
    assert read.read_at is not None and store.notifications[ids[0]].read_at == read.read_at
    again = await queries.mark_read(lambda: uow, "u1", ids[0])
    assert again.read_at == read.read_at  # the first read time stays
    unread, _ = await queries.list_notifications(lambda: uow, "u1", unread=True)
    assert ids[0] not in [n.id for n in unread]


# --- the fakes keep the SQL adapters' contract ---------------------------------------------


@pytest.fixture
def url(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'notifications.db'}"
    migrated("notifications", url)
    return url


@pytest.fixture
def db(url: str) -> Iterator[Engine]:
    engine = create_db_engine(url.replace("+aiosqlite", ""))
    yield engine
    engine.dispose()


@pytest.fixture
async def aengine(url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_async_db_engine(url)
    yield engine
    await engine.dispose()


T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _write(writer: AbstractNotificationWriter) -> list[str]:
    message = Message("order", "s", "b")
    a = writer.record(
        owner=None, message=message, event_type="t", event_id="e1", order_id="o1", now=T0
    )
    writer.remember_owner("o1", "u1")
    writer.remember_owner("o1", "u9")  # the first owner stays
    assert writer.owner_of("o1") == "u1" and writer.owner_of("o2") is None
    b = writer.record(
        owner="u2",
        message=message,
        event_type="t",
        event_id="e2",
        order_id=None,
        now=T0 + timedelta(seconds=1),
    )
    return [a.id, b.id]


async def _read(reader: AbstractNotificationReader, ids: list[str]) -> None:
    everyone = await reader.list_for(None, unread=None, before=None, limit=10)
    assert [n.id for n in everyone] == [ids[1], ids[0]]
    assert [n.owner for n in everyone] == ["u2", "u1"]
    assert everyone[1].created_at == T0
    await reader.mark_read(ids[0], T0 + timedelta(hours=1))
    await reader.mark_read(ids[0], T0 + timedelta(hours=2))  # kept: the first read time
    first = await reader.get(ids[0])
    assert first is not None and first.read_at == T0 + timedelta(hours=1)
    assert [n.id for n in await reader.list_for("u1", unread=True, before=None, limit=9)] == []
    assert [n.id for n in await reader.list_for("u1", unread=False, before=None, limit=9)] == [
        ids[0]
    ]
    older = await reader.list_for(
        None, unread=None, before=(everyone[0].created_at, ids[1]), limit=9
    )
    assert [n.id for n in older] == [ids[0]]
    assert await reader.get("nope") is None


@pytest.mark.parametrize("kind", ["memory", "sql"])
async def test_both_adapters_behave_alike(
    kind: str, db: Engine, aengine: AsyncEngine, store: MemoryStore
) -> None:
    if kind == "memory":
        ids = _write(MemoryNotificationWriter(store))
        await _read(MemoryNotificationReader(store), ids)
        return
    with db.begin() as conn:
        ids = _write(SqlNotificationWriter(conn))
    async with aengine.begin() as aconn:
        await _read(NotificationReader(aconn), ids)


def test_a_stored_notification_publishes_notification_sent_in_its_transaction(
    tmp_path: Path,
) -> None:
    """notification.sent {notification_id, order_id, user} is an outbox row of the same
    transaction as the notification; an event making no notification writes none."""
    url = sqlite_url(tmp_path / "n.db")
    migrate(NotificationsSettings(database_url=url.replace("sqlite://", "sqlite+aiosqlite://")))
    engine = create_db_engine(url)
    try:
        with engine.begin() as conn:
            handle_event(Event("order.created", {"order_id": "o-1", "owner": "alice"}), conn)
            handle_event(Event("order.confirmed", {"order_id": "o-1", "owner": "alice"}), conn)
        with engine.connect() as conn:
            note_id = conn.execute(select(notifications.c.id)).scalar_one()
            rows = conn.execute(select(outbox.c.type, outbox.c.data)).all()
        assert [(r.type, r.data) for r in rows] == [
            ("notification.sent", {"notification_id": note_id, "order_id": "o-1", "user": "alice"})
        ]
        try:
            with engine.begin() as conn:
                handle_event(Event("order.rejected", {"order_id": "o-2", "owner": "bob"}), conn)
                raise RuntimeError("the inbox transaction fails")
        except RuntimeError:
            pass
        with engine.connect() as conn:
            assert len(conn.execute(select(outbox.c.id)).all()) == 1  # rolled back together
    finally:
        engine.dispose()
