"""The live hub (services.notifications.service_layer.live, ADR 0035): per-consumer limits,
whom a stored notification wakes, waking from the consumer's thread, and the drain. The store
reads a stream makes are in test_services.py; the streams themselves, through the gateway, in
tests/integration/test_notification_streams.py."""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta

import pytest

from services.notifications.adapters.memory import MemoryStore
from services.notifications.domain import Notification
from services.notifications.service_layer import queries
from services.notifications.service_layer.live import LiveHub, TooManyStreams
from services.notifications.service_layer.unit_of_work import InMemoryUnitOfWork


def test_the_limit_is_per_consumer_and_a_closed_stream_gives_its_place_back() -> None:
    hub = LiveHub(limit=2, heartbeat=1.0, poll=1.0)
    first = hub.open("alice", "alice")
    hub.open("alice", "alice")
    with pytest.raises(TooManyStreams):
        hub.open("alice", "alice")
    hub.open("bob", "bob")  # another consumer's own count
    hub.close(first)
    hub.open("alice", "alice")
    assert hub.open_count("alice") == 2 and hub.open_count("bob") == 1


async def test_a_notification_wakes_its_owner_and_staff_only() -> None:
    hub = LiveHub(limit=5, heartbeat=1.0, poll=1.0)
    alice, bob, staff = hub.open("alice", "alice"), hub.open("bob", "bob"), hub.open(None, "ops")
    hub.notify(["alice"])
    assert alice.wake.is_set() and staff.wake.is_set() and not bob.wake.is_set()
    staff.wake.clear()
    hub.notify([None])  # an owner not known yet: only staff can see it
    assert staff.wake.is_set() and not bob.wake.is_set()


async def test_the_consumer_thread_wakes_streams_on_the_loop() -> None:
    hub = LiveHub(limit=5, heartbeat=1.0, poll=1.0)
    hub.bind(asyncio.get_running_loop())
    follower = hub.open("alice", "alice")
    thread = threading.Thread(target=hub.notify_threadsafe, args=(["alice"],))
    thread.start()
    thread.join()
    async with asyncio.timeout(5):
        await follower.wake.wait()


async def test_close_all_wakes_every_stream_and_marks_the_hub_closing() -> None:
    hub = LiveHub(limit=5, heartbeat=1.0, poll=1.0)
    followers = [hub.open("alice", "alice"), hub.open(None, "ops")]
    hub.close_all()
    assert hub.closing and all(f.wake.is_set() for f in followers)
    assert hub.open("bob", "bob").wake.is_set()  # opened while closing: ends at once


def _note(owner: str, n: int, at: datetime) -> Notification:
    return Notification(
        id=f"n{n}",
        owner=owner,
        kind="order",
        event_type="order.confirmed",
        event_id=f"e{n}",
        order_id=f"o{n}",
        subject="s",
        body="b",
        created_at=at,
    )


async def test_a_stream_reads_what_is_stored_after_its_position_oldest_first() -> None:
    store = MemoryStore()
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    for n, owner in enumerate(["alice", "bob", "alice", "alice"]):
        note = _note(owner, n, t0 + timedelta(seconds=n))
        store.notifications[note.id] = note

    def uow() -> InMemoryUnitOfWork:
        return InMemoryUnitOfWork(store)

    assert await queries.latest_position(uow, "alice") == (t0 + timedelta(seconds=3), "n3")
    assert await queries.latest_position(uow, "carol") is None
    after = (t0, "n0")
    rows = await queries.notifications_after(uow, "alice", after, 10)
    assert [r.id for r in rows] == ["n2", "n3"]
    assert [r.id for r in await queries.notifications_after(uow, None, after, 2)] == ["n1", "n2"]
    assert [r.id for r in await queries.notifications_after(uow, "alice", None, 1)] == ["n0"]
