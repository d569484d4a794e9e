"""The event-sourced reads over HTTP: an order's history, `as_of`, and the internal feed."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web

from chassis.eventstore import parse_time
from services.orders.__main__ import init
from services.orders.app import create_app
from services.orders.schemas import parse_rfc3339
from services.orders.settings import OrdersSettings
from tests.support.tokens import TestIssuer
from tests.support.waiting import wait_until_async

from .fakes import FakeUpstreams
from .test_api import BODY, Client, auth, post, wait_for_status


@pytest.fixture
async def client(
    aiohttp_client: Callable[[web.Application], Awaitable[Client]],
    settings: OrdersSettings,
    issuer: TestIssuer,
    upstreams: FakeUpstreams,
) -> Client:
    init(settings)
    app = create_app(settings, verifier=issuer.async_verifier(), upstreams=upstreams)
    return await aiohttp_client(app)


HAPPY = [
    "order.created",
    "order.stock_reserved",
    "order.payment_captured",
    "order.confirmed",
    "order.stock_committed",
]


async def placed_and_settled(client: Client, issuer: TestIssuer, **kw: Any) -> dict[str, Any]:
    resp = await post(client, issuer, **kw)
    return await wait_for_status(client, issuer, resp.headers["Location"])


async def history(client: Client, issuer: TestIssuer, order_id: str) -> dict[str, Any]:
    async def committed() -> dict[str, Any] | None:  # the saga's last step follows CONFIRMED
        resp = await client.get(f"/api/v1/orders/{order_id}/history", headers=auth(issuer))
        assert resp.status == 200
        doc: dict[str, Any] = await resp.json()
        return doc if doc["events"][-1]["type"] != "order.confirmed" else None

    return await wait_until_async(committed, 5, "order.stock_committed", interval=0.01)


async def test_history_lists_every_event_in_order_owner_or_staff(
    client: Client, issuer: TestIssuer
) -> None:
    order = await placed_and_settled(client, issuer)
    doc = await history(client, issuer, order["id"])
    assert doc["order_id"] == order["id"]
    assert [e["type"] for e in doc["events"]] == HAPPY
    assert [e["version"] for e in doc["events"]] == [1, 2, 3, 4, 5]
    first = doc["events"][0]
    assert first["cause"].startswith("placed")
    assert first["data"]["payment_method"] == "pm_card_ok" and first["data"]["owner"] == "alice"
    assert doc["events"][1]["cause"] == "saga RESERVE: Reserved"
    times = [parse_time(e["occurred_at"]) for e in doc["events"]]
    assert times == sorted(times)
    url = f"/api/v1/orders/{order['id']}/history"
    other = await client.get(url, headers=auth(issuer, sub="bob"))
    assert other.status == 404 and other.content_type == "application/problem+json"
    staff = await client.get(url, headers=auth(issuer, sub="carol", scopes=("orders:read:all",)))
    assert staff.status == 403  # orders:read is still required
    staff = await client.get(
        url, headers=auth(issuer, sub="carol", scopes=("orders:read", "orders:read:all"))
    )
    assert staff.status == 200 and len((await staff.json())["events"]) == 5
    assert (await client.get(url)).status == 401
    missing = await client.get("/api/v1/orders/nope/history", headers=auth(issuer))
    assert missing.status == 404


async def test_as_of_folds_the_events_up_to_that_time(client: Client, issuer: TestIssuer) -> None:
    order = await placed_and_settled(
        client, issuer, body={**BODY, "payment_method": "pm_card_declined"}
    )
    assert order["status"] == "REJECTED"
    events = await client.get(f"/api/v1/orders/{order['id']}/history", headers=auth(issuer))
    doc = await events.json()
    kinds = [e["type"] for e in doc["events"]]
    assert kinds == [
        "order.created",
        "order.stock_reserved",
        "order.payment_declined",
        "order.stock_released",
        "order.rejected",
    ]
    url = f"/api/v1/orders/{order['id']}"
    created = doc["events"][0]["occurred_at"]
    then = await client.get(url, params={"as_of": created}, headers=auth(issuer))
    assert then.status == 200
    past = await then.json()
    assert past["status"] == "PENDING" and past["saga"]["step"] == "RESERVE"
    assert past["total"] == order["total"] and past["items"] == order["items"]
    declined = doc["events"][2]["occurred_at"]
    mid = await (await client.get(url, params={"as_of": declined}, headers=auth(issuer))).json()
    assert mid["status"] == "PENDING" and mid["saga"]["step"] == "RELEASE"
    assert mid["reason"] == "payment declined: card declined"
    later = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    now = await (await client.get(url, params={"as_of": later}, headers=auth(issuer))).json()
    assert now["status"] == "REJECTED" and now["reason"] == order["reason"]
    before = (parse_time(created) - timedelta(microseconds=1)).isoformat()
    gone = await client.get(url, params={"as_of": before}, headers=auth(issuer))
    assert gone.status == 404 and gone.content_type == "application/problem+json"
    other = await client.get(url, params={"as_of": later}, headers=auth(issuer, sub="bob"))
    assert other.status == 404


@pytest.mark.parametrize(
    "bad",
    [
        "yesterday",
        "2026-01-01",
        "2026-01-01T10:00:00",
        "1767261600",
        "2026-13-01T00:00:00Z",
        "2026-01-01T10:00:00+0100",
        "x" * 5000,
        "",
    ],
)
async def test_unknown_as_of_formats_are_422(client: Client, issuer: TestIssuer, bad: str) -> None:
    resp = await client.get("/api/v1/orders/any", params={"as_of": bad}, headers=auth(issuer))
    assert resp.status == 422 and resp.content_type == "application/problem+json"
    doc = await resp.json()
    assert "as_of" in doc["errors"] and "Traceback" not in str(doc)


def test_rfc3339_forms() -> None:
    want = datetime(2026, 1, 1, 9, 0, 0, 123456, tzinfo=UTC)
    assert parse_rfc3339("2026-01-01T10:00:00.123456789+01:00") == want
    assert parse_rfc3339("2026-01-01t09:00:00.123456z") == want


async def test_the_feed_serves_envelopes_by_position_with_its_scope(
    client: Client, issuer: TestIssuer
) -> None:
    feed = auth(issuer, sub="views", scopes=("orders:events",))
    empty = await client.get("/internal/v1/events", headers=feed)
    assert empty.status == 200 and await empty.json() == {"events": [], "last_position": 0}
    order = await placed_and_settled(client, issuer)
    await history(client, issuer, order["id"])
    await placed_and_settled(client, issuer, key="k-2")
    resp = await client.get("/internal/v1/events", params={"limit": "3"}, headers=feed)
    assert resp.status == 200 and resp.content_type == "application/json"
    doc = await resp.json()
    assert [e["position"] for e in doc["events"]] == [1, 2, 3]
    assert doc["last_position"] >= 6
    first = doc["events"][0]
    assert set(first) == {"id", "type", "occurred_at", "data", "stream", "version", "position"}
    assert first["type"] == "order.created" and first["stream"] == order["id"]
    assert first["version"] == 1 and first["data"]["order_id"] == order["id"]
    rest = await (
        await client.get("/internal/v1/events", params={"after": "3"}, headers=feed)
    ).json()
    positions = [e["position"] for e in rest["events"]]
    assert positions == list(range(4, doc["last_position"] + 1)) or positions[0] == 4
    streams: dict[str, list[int]] = {}
    for e in doc["events"] + rest["events"]:
        streams.setdefault(e["stream"], []).append(e["version"])
    assert all(v == list(range(1, len(v) + 1)) for v in streams.values())  # no gaps
    assert (await client.get("/internal/v1/events")).status == 401
    no_scope = await client.get("/internal/v1/events", headers=auth(issuer))
    assert no_scope.status == 403
    for params in ({"after": "-1"}, {"limit": "0"}, {"limit": "1001"}, {"after": "x"}):
        bad = await client.get("/internal/v1/events", params=params, headers=feed)
        assert bad.status == 422 and bad.content_type == "application/problem+json"
