"""Orders -> outbox -> RabbitMQ -> notifications, on PostgreSQL: an order's outcome becomes
exactly one notification for its owner, even when the event is delivered twice."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import MetaData, func, select, update

from chassis import create_db_engine
from chassis.db import sync_url
from chassis.messaging import BrokerSettings, Event, OutboxRelay, outbox_insert, outbox_table
from services.notifications.__main__ import init as init_notifications
from services.notifications.adapters.orm import notifications
from services.notifications.app import QUEUE
from services.notifications.app import create_app as notifications_app
from services.notifications.settings import NotificationsSettings
from services.orders.__main__ import init as init_orders
from services.orders.app import create_app as orders_app
from services.orders.settings import OrdersSettings
from tests.support.brokers import cleanup, isolated_settings, rabbitmq_reachable
from tests.support.external import throwaway_postgres
from tests.support.tokens import TestIssuer
from tests.support.waiting import wait_until_async
from tests.unit.orders.fakes import FakeUpstreams

pytestmark = pytest.mark.postgres

Client = TestClient[web.Request, web.Application]


@pytest.fixture
def broker() -> Iterator[BrokerSettings]:
    settings = isolated_settings(rabbitmq_reachable())
    yield settings
    cleanup(settings, [f"{settings.queue_prefix}{QUEUE}", f"{settings.queue_prefix}{QUEUE}.dlq"])


@pytest.fixture
def notifications_url() -> Iterator[str]:
    with throwaway_postgres("notif") as url:
        yield url


async def test_order_outcome_becomes_one_notification(
    aiohttp_client: Callable[[web.Application], Awaitable[Client]],
    postgres_url: str,
    notifications_url: str,
    broker: BrokerSettings,
) -> None:
    issuer = TestIssuer()
    n_settings = NotificationsSettings(database_url=notifications_url)
    init_notifications(n_settings)
    notes = await aiohttp_client(
        notifications_app(n_settings, verifier=issuer.async_verifier(), broker=broker)
    )
    o_settings = OrdersSettings(database_url=postgres_url, saga_poll_interval=0.05)
    init_orders(o_settings)
    orders = await aiohttp_client(
        orders_app(
            o_settings,
            verifier=issuer.async_verifier(),
            upstreams=FakeUpstreams(),
            broker=broker,
        )
    )
    assert (await orders.get("/health/ready")).status == 200
    assert (await notes.get("/health/ready")).status == 200

    headers = {
        **issuer.auth(("orders:write", "orders:read"), sub="alice"),
        "Idempotency-Key": "one",
    }
    body = {"items": [{"sku": "BK-0001", "quantity": 1}], "payment_method": "pm_card_ok"}
    resp = await orders.post("/api/v1/orders", json=body, headers=headers)
    assert resp.status == 202
    order_id = (await resp.json())["id"]
    alice = issuer.auth(("notifications:read",), sub="alice")

    async def notified() -> list[dict[str, Any]]:
        doc = await (await notes.get("/api/v1/notifications", headers=alice)).json()
        return [n for n in doc["items"] if n["order_id"] == order_id]

    async def has_one() -> bool:
        return len(await notified()) == 1

    await wait_until_async(has_one, 20, "the outcome notification", interval=0.05)
    (note,) = await notified()
    assert note["event_type"] == "order.confirmed" and note["kind"] == "order"

    # The same event published again (a relay that crashed before marking it sent).
    engine = create_db_engine(sync_url(postgres_url))
    try:
        with engine.connect() as conn:
            table = outbox_table(MetaData())
            confirmed_id = conn.execute(
                select(table.c.id).where(table.c.type == "order.confirmed")
            ).scalar_one()
        again = OutboxRelay(engine, table, broker)
        with engine.begin() as conn:
            conn.execute(update(table).where(table.c.id == confirmed_id).values(published_at=None))
        again.run_once()  # or the orders app's own relay got there first: either way,
        again.stop()  # the event went out a second time
        with engine.connect() as conn:
            republished = conn.execute(
                select(table.c.published_at).where(table.c.id == confirmed_id)
            ).scalar_one()
        assert republished is not None
    finally:
        engine.dispose()
    # A new event behind it: once it is in, the duplicate before it was handled too.
    probe = Event("order.rejected", {"order_id": "probe", "owner": "alice", "reason": "x"})
    side = create_db_engine(sync_url(postgres_url))
    try:
        with side.begin() as conn:
            conn.execute(outbox_insert(outbox_table(MetaData()), probe))
        OutboxRelay(side, outbox_table(MetaData()), broker).run_once()
    finally:
        side.dispose()

    async def probe_seen() -> bool:
        doc = await (await notes.get("/api/v1/notifications", headers=alice)).json()
        return any(n["order_id"] == "probe" for n in doc["items"])

    await wait_until_async(probe_seen, 20, "the probe event", interval=0.05)
    assert len(await notified()) == 1
    n_engine = create_db_engine(sync_url(notifications_url))
    try:
        with n_engine.connect() as conn:
            count = conn.execute(
                select(func.count())
                .select_from(notifications)
                .where(notifications.c.order_id == order_id)
            ).scalar_one()
        assert count == 1
    finally:
        n_engine.dispose()
