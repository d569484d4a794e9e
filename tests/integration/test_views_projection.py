"""The read side against real RabbitMQ and a feed in the contract's format: catch-up at start,
live events applied once and in stream order (gaps filled from the feed), a restart that loses
nothing and applies nothing twice, and `rebuild` giving identical answers. Runs on SQLite and
on PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from chassis import create_db_engine, sqlite_url
from chassis.db import sync_url
from chassis.messaging import BrokerSettings
from services.views.__main__ import migrate, rebuild
from services.views.adapters.reads import everything
from services.views.app import LAG, QUEUE, create_app
from services.views.settings import ViewsSettings
from tests.support.brokers import cleanup, isolated_settings, rabbitmq_reachable
from tests.support.external import throwaway_postgres
from tests.support.feed import CLIENT, FeedLog, feed_app, order_events, publish
from tests.support.tokens import TestIssuer
from tests.support.waiting import wait_until_async

Client = TestClient[web.Request, web.Application]


@pytest.fixture
def broker() -> Iterator[BrokerSettings]:
    settings = isolated_settings(rabbitmq_reachable())
    yield settings
    cleanup(settings, [f"{settings.queue_prefix}{QUEUE}", f"{settings.queue_prefix}{QUEUE}.dlq"])


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "views.db").replace("sqlite://", "sqlite+aiosqlite://")
        return
    with throwaway_postgres("views") as url:
        yield url


async def test_catch_up_follow_restart_and_rebuild(
    aiohttp_client: Callable[..., Awaitable[Client]],
    aiohttp_server: Any,
    database_url: str,
    broker: BrokerSettings,
) -> None:
    issuer = TestIssuer()
    log = FeedLog()
    # History from before the read side existed: only the feed has it.
    order_events(log, "o-1", "alice", [("BK-1", 2, "10.00"), ("BK-2", 1, "5.50")])
    order_events(log, "o-2", "bob", [("BK-1", 1, "10.00")], outcome="rejected")
    order_events(log, "o-3", "alice", [("BK-1", 1, "10.00"), ("BK-3", 3, "1.00")])
    feed: TestServer = await aiohttp_server(feed_app(log, issuer), host="127.0.0.1")
    base = f"http://127.0.0.1:{feed.port}"
    settings = ViewsSettings(
        database_url=database_url,
        orders_url=base,
        token_url=f"{base}/oauth/token",
        client_id=CLIENT[0],
        client_secret=CLIENT[1],
        feed_page=4,  # several pages per catch-up
        max_lag=600,
        catch_up_retry=0.1,
    )
    migrate(settings)
    alice = issuer.auth(("orders:read",), sub="alice")
    staff = issuer.auth(("reports:read",), sub="staff-1")
    reader = issuer.auth(("catalog:read",), sub="carol")

    async def start() -> Client:
        return await aiohttp_client(
            create_app(settings, verifier=issuer.async_verifier(), broker=broker)
        )

    async def mine(client: Client) -> dict[str, dict[str, Any]]:
        resp = await client.get("/api/v1/me/orders?limit=100", headers=alice)
        assert resp.status == 200, await resp.text()
        assert "X-Read-Model-Lag" in resp.headers
        return {o["id"]: o for o in (await resp.json())["items"]}

    async def report(client: Client) -> dict[str, Any]:
        resp = await client.get(
            "/api/v1/reports/sales?from=2000-01-01&to=2000-12-31", headers=staff
        )
        assert resp.status == 200
        today = await client.get(
            f"/api/v1/reports/sales?from={_today()}&to={_today()}", headers=staff
        )
        assert today.status == 200, await today.text()
        return await today.json()  # type: ignore[no-any-return]

    views = await start()
    ready = await views.get("/health/ready")
    assert ready.status == 200
    assert "projection" in await ready.json()

    async def has(ids: set[str]) -> bool:
        return ids <= set(await mine(views))

    await wait_until_async(lambda: has({"o-1", "o-3"}), 30, "the catch-up", interval=0.05)
    orders = await mine(views)
    assert set(orders) == {"o-1", "o-3"}  # bob's order is not alice's
    assert orders["o-1"]["status"] == "CONFIRMED" and orders["o-1"]["payment_state"] == "captured"
    assert orders["o-1"]["total"] == "25.50"
    assert list(orders) == ["o-3", "o-1"]  # newest first
    # complete: the catch-up reached the head, then the consumer keeps finding its queue empty
    lag = views.app[LAG]
    await wait_until_async(lambda: lag.caught_up, 30, "the catch-up's end", interval=0.05)
    since = lag.complete_at or 0.0
    await wait_until_async(
        lambda: (lag.complete_at or 0) > since, 30, "an empty queue (on_idle)", interval=0.05
    )

    # Live: a whole order published; each event also in the log (as orders' outbox does).
    live = order_events(log, "o-4", "alice", [("BK-2", 1, "5.50"), ("BK-3", 1, "1.00")])
    publish(broker, *live)
    publish(broker, live[-2])  # a duplicate delivery of order.confirmed
    await wait_until_async(lambda: has({"o-4"}), 30, "the live order", interval=0.05)

    async def o4_confirmed() -> bool:
        return (await mine(views))["o-4"]["status"] == "CONFIRMED"

    await wait_until_async(o4_confirmed, 30, "o-4 confirmed", interval=0.05)

    # A gap: versions 1-5 only in the log, version 6 live -> filled from the feed, in order.
    gap = order_events(log, "o-5", "alice", [("BK-1", 1, "10.00")])
    publish(broker, gap[-2])  # order.confirmed (version 5); 1-4 never reach the broker

    async def o5_confirmed() -> bool:
        o = (await mine(views)).get("o-5")
        return o is not None and o["status"] == "CONFIRMED" and o["total"] == "10.00"

    await wait_until_async(o5_confirmed, 30, "the gap filled", interval=0.05)

    # Other publishers: a notification about o-1, and catalog's product ids.
    publish(
        broker,
        _plain("notification.sent", {"notification_id": "n-1", "order_id": "o-1", "user": "alice"}),
        _plain("product.created", {"id": "p-1", "sku": "BK-1", "version": 1}),
        _plain("product.created", {"id": "p-3", "sku": "BK-3", "version": 1}),
    )

    async def notified() -> bool:
        return (await mine(views))["o-1"]["notifications"] == 1

    await wait_until_async(notified, 30, "the notification count", interval=0.05)

    async def recommended() -> dict[str, Any] | None:
        resp = await views.get("/api/v1/products/p-3/recommendations", headers=reader)
        return await resp.json() if resp.status == 200 else None

    recs = await wait_until_async(recommended, 30, "the product map", interval=0.05)
    assert recs["sku"] == "BK-3"
    assert {(r["sku"], r["product_id"], r["orders"]) for r in recs["items"]} == {
        ("BK-1", "p-1", 1),
        ("BK-2", None, 1),
    }
    sales = await report(views)
    assert {(r["sku"], r["units"], r["revenue"]) for r in sales["items"]} == {
        ("BK-1", 4, "40.00"),  # o-1 2, o-3 1, o-5 1 (o-2 was rejected)
        ("BK-2", 2, "11.00"),
        ("BK-3", 4, "4.00"),
    }
    assert sales["totals"] == [{"currency": "EUR", "units": 10, "revenue": "55.00"}]

    # Stopped; events happen meanwhile (some published to its durable queue, one feed-only).
    stored = views.app[LAG].position
    await views.close()
    log.reads.clear()
    down = order_events(log, "o-6", "alice", [("BK-2", 2, "5.50")])
    publish(broker, *down[:3])
    order_events(log, "o-7", "alice", [("BK-3", 1, "1.00")], outcome="rejected")
    views = await start()
    await wait_until_async(lambda: has({"o-6", "o-7"}), 30, "after the restart", interval=0.05)
    assert stored > 0 and log.reads[0] == stored  # resumed from its stored position

    async def finished() -> bool:
        now = await mine(views)
        return now["o-6"]["status"] == "CONFIRMED" and now["o-7"]["status"] == "REJECTED"

    await wait_until_async(finished, 30, "o-6 confirmed, o-7 rejected", interval=0.05)
    publish(broker, *down[3:])  # their live copies arrive late: applied before, skipped now
    sales = await report(views)
    assert sales["totals"] == [{"currency": "EUR", "units": 12, "revenue": "66.00"}]
    before = await mine(views)
    before_report = await report(views)
    await views.close()

    engine = create_db_engine(sync_url(database_url))
    try:
        with engine.connect() as conn:
            rows = everything(conn)
        result = await asyncio.to_thread(rebuild, settings)
        assert result["applied"] == len(log.events)  # each once, from position 0
        with engine.connect() as conn:
            assert everything(conn) == rows
    finally:
        engine.dispose()
    views = await start()
    assert await mine(views) == before
    assert await report(views) == before_report


def _today() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).date().isoformat()


def _plain(type_: str, data: dict[str, Any]) -> dict[str, Any]:
    import uuid
    from datetime import UTC, datetime

    return {
        "id": uuid.uuid4().hex,
        "type": type_,
        "occurred_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        "data": data,
    }
