"""The read side without a broker: the projector applied to envelopes on a real SQLite file,
and the routes over it (owner scoping, bounds, problem+json, pagination, the lag bound)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from sqlalchemy import Engine

from chassis import create_db_engine, sqlite_url
from services.views.__main__ import migrate
from services.views.adapters import projection as sql
from services.views.app import create_app
from services.views.domain import parse_envelope
from services.views.service_layer.lag import LagTracker
from services.views.service_layer.projector import GapNotFilled, Projector
from services.views.settings import ViewsSettings
from tests.support.feed import FeedLog, order_events
from tests.support.tokens import TestIssuer

Client = TestClient[web.Request, web.Application]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def url(tmp_path: Path) -> str:
    url = sqlite_url(tmp_path / "views.db")
    migrate(ViewsSettings(database_url=url.replace("sqlite://", "sqlite+aiosqlite://")))
    return url


@pytest.fixture
def engine(url: str) -> Iterator[Engine]:
    engine = create_db_engine(url)
    yield engine
    engine.dispose()


def apply_all(engine: Engine, projector: Projector, events: list[dict[str, Any]]) -> list[str]:
    with engine.begin() as conn:
        return [projector.apply_order(conn, parse_envelope(e)) for e in events]


def test_a_stream_applies_in_version_order_only(engine: Engine) -> None:
    log = FeedLog()
    events = order_events(log, "o-1", "alice", [("A", 1, "2.00"), ("B", 2, "1.50")])
    projector = Projector(LagTracker())
    assert apply_all(engine, projector, events[2:3]) == ["gap"]  # version 3 before 1
    assert apply_all(engine, projector, events) == ["applied"] * 6
    assert apply_all(engine, projector, events) == ["skipped"] * 6  # redelivered: no effect
    with engine.connect() as conn:
        view = sql.load_view(conn, "o-1")
    assert view is not None and view.version == 6 and view.status == "CONFIRMED"
    assert view.payment_state == "captured" and view.total == "5.00"


def test_a_gap_without_a_feed_is_not_applied(engine: Engine) -> None:
    log = FeedLog()
    events = order_events(log, "o-1", "alice", [("A", 1, "2.00")])
    projector = Projector(LagTracker())
    with pytest.raises(GapNotFilled), engine.begin() as conn:
        env = parse_envelope(events[4])
        assert projector.apply_order(conn, env) == "gap"
        projector.fill_gap(conn, env)
    with engine.connect() as conn:
        assert sql.load_view(conn, "o-1") is None


def test_envelope_parsing_is_tolerant_of_extra_keys_and_strict_on_types() -> None:
    doc = {
        "id": "e1",
        "type": "order.created",
        "occurred_at": "2026-01-01T00:00:00Z",
        "data": {},
        "stream": "o-1",
        "version": 1,
        "position": 7,
        "something_new": True,
    }
    env = parse_envelope(doc)
    assert (env.stream, env.version, env.position) == ("o-1", 1, 7)
    for bad in ({"version": 0}, {"version": "1"}, {"position": -1}, {"occurred_at": "x"}):
        with pytest.raises(ValueError):
            parse_envelope({**doc, **bad})


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def views(
    aiohttp_client: Callable[[web.Application], Awaitable[Client]],
    url: str,
    engine: Engine,
    clock: Clock,
) -> tuple[Client, TestIssuer, LagTracker]:
    issuer = TestIssuer()
    lag = LagTracker(clock=clock)
    lag.caught_up_now(0)
    settings = ViewsSettings(
        database_url=url.replace("sqlite://", "sqlite+aiosqlite://"), consume=False, max_lag=10
    )
    client = await aiohttp_client(create_app(settings, verifier=issuer.async_verifier(), lag=lag))
    log = FeedLog()
    day = datetime(2026, 3, 1, 12, tzinfo=UTC)
    for i in range(5):
        order_events(
            log,
            f"o-{i}",
            "alice",
            [("A", 1, "2.00"), ("B", i + 1, "1.00")],
            when=day + timedelta(i),
        )
    order_events(log, "o-bob", "bob", [("A", 1, "2.00")], when=day)
    apply_all(engine, Projector(lag), log.events)
    with engine.begin() as conn:
        sql.upsert_product(conn, "p-a", "A", 1, False)
    return client, issuer, lag


async def test_my_orders_are_the_callers_own_newest_first_paginated(
    views: tuple[Client, TestIssuer, LagTracker],
) -> None:
    client, issuer, _ = views
    alice = issuer.auth(("orders:read",), sub="alice")
    seen: list[str] = []
    path = "/api/v1/me/orders?limit=2"
    while path:
        resp = await client.get(path, headers=alice)
        assert resp.status == 200 and resp.headers["X-Read-Model-Lag"] == "0.0"
        doc = await resp.json()
        seen += [o["id"] for o in doc["items"]]
        cursor = doc["next_cursor"]
        path = f"/api/v1/me/orders?limit=2&cursor={cursor}" if cursor else ""
    assert seen == ["o-4", "o-3", "o-2", "o-1", "o-0"]
    bob = await client.get("/api/v1/me/orders", headers=issuer.auth(("orders:read",), sub="bob"))
    assert [o["id"] for o in (await bob.json())["items"]] == ["o-bob"]


@pytest.mark.parametrize(
    ("path", "scopes", "status"),
    [
        ("/api/v1/me/orders", (), 401),
        ("/api/v1/me/orders", ("catalog:read",), 403),
        ("/api/v1/me/orders?limit=101", ("orders:read",), 422),
        ("/api/v1/me/orders?cursor=not*a*cursor", ("orders:read",), 422),
        ("/api/v1/reports/sales?from=2026-03-01&to=2026-03-02", ("orders:read",), 403),
        ("/api/v1/reports/sales?from=2026-03-01", ("reports:read",), 422),
        ("/api/v1/reports/sales?from=2026-13-01&to=2026-03-02", ("reports:read",), 422),
        ("/api/v1/reports/sales?from=2026-03-02&to=2026-03-01", ("reports:read",), 422),
        ("/api/v1/reports/sales?from=2020-01-01&to=2026-03-01", ("reports:read",), 422),
        ("/api/v1/products/p-a/recommendations?limit=0", ("catalog:read",), 422),
        ("/api/v1/products/nope/recommendations", ("catalog:read",), 404),
        ("/api/v1/products/p-a/recommendations", ("orders:read",), 403),
    ],
)
async def test_bad_requests_are_problems(
    views: tuple[Client, TestIssuer, LagTracker], path: str, scopes: tuple[str, ...], status: int
) -> None:
    client, issuer, _ = views
    headers = issuer.auth(scopes, sub="alice") if scopes else {}
    resp = await client.get(path, headers=headers)
    assert resp.status == status
    assert resp.content_type == "application/problem+json"
    assert "X-Read-Model-Lag" in resp.headers


async def test_sales_report_and_recommendations(
    views: tuple[Client, TestIssuer, LagTracker],
) -> None:
    client, issuer, _ = views
    staff = issuer.auth(("reports:read",), sub="staff")
    resp = await client.get(
        "/api/v1/reports/sales?from=2026-03-01&to=2026-03-02&limit=3", headers=staff
    )
    doc = await resp.json()
    assert resp.status == 200
    assert [(r["day"], r["sku"], r["units"], r["revenue"]) for r in doc["items"]] == [
        ("2026-03-01", "A", 2, "4.00"),  # o-0 and bob's
        ("2026-03-01", "B", 1, "1.00"),
        ("2026-03-02", "A", 1, "2.00"),
    ]
    assert doc["totals"] == [{"currency": "EUR", "units": 6, "revenue": "9.00"}]
    more = await client.get(
        f"/api/v1/reports/sales?from=2026-03-01&to=2026-03-02&limit=3&cursor={doc['next_cursor']}",
        headers=staff,
    )
    assert [(r["day"], r["sku"]) for r in (await more.json())["items"]] == [("2026-03-02", "B")]
    recs = await client.get(
        "/api/v1/products/p-a/recommendations", headers=issuer.auth(("catalog:read",))
    )
    assert (await recs.json())["items"] == [{"product_id": None, "sku": "B", "orders": 5}]


async def test_a_read_model_too_far_behind_answers_503(
    views: tuple[Client, TestIssuer, LagTracker], clock: Clock
) -> None:
    client, issuer, lag = views
    alice = issuer.auth(("orders:read",), sub="alice")
    clock.now += 9
    resp = await client.get("/api/v1/me/orders", headers=alice)
    assert resp.status == 200 and resp.headers["X-Read-Model-Lag"] == "9.0"
    clock.now += 2  # 11 s since the models were last known complete; the bound is 10
    resp = await client.get("/api/v1/me/orders", headers=alice)
    assert resp.status == 503 and resp.content_type == "application/problem+json"
    assert resp.headers["Retry-After"] == "10" and resp.headers["X-Read-Model-Lag"] == "11.0"
    ready = await (await client.get("/health/ready")).json()
    assert ready["projection"]["staleness_seconds"] == 11
    lag.idle()  # the consumer found its queue empty: complete again
    assert (await client.get("/api/v1/me/orders", headers=alice)).status == 200
    metrics = await (await client.get("/metrics")).text()
    assert "views_projection_lag_seconds_count" in metrics
    assert "views_read_model_staleness_seconds" in metrics
