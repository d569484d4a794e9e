"""The orders HTTP API end to end in-process: fake upstreams, a real saga driver."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from chassis.validation import IDEMPOTENCY_KEY_MISSING
from services.orders.__main__ import init
from services.orders.app import create_app
from services.orders.settings import OrdersSettings
from tests.support.tokens import TestIssuer
from tests.support.waiting import wait_until_async

from .fakes import FakeUpstreams

Client = TestClient[web.Request, web.Application]
BODY = {"items": [{"sku": "BK-0001", "quantity": 2}], "payment_method": "pm_card_ok"}


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


def auth(issuer: TestIssuer, sub: str = "alice", scopes: tuple[str, ...] = ()) -> dict[str, str]:
    return issuer.auth(scopes or ("orders:read", "orders:write"), sub=sub)


async def post(
    client: Client, issuer: TestIssuer, body: Any = BODY, key: str | None = "k-1", **kw: Any
) -> Any:
    headers = auth(issuer, **kw)
    if key is not None:
        headers["Idempotency-Key"] = key
    return await client.post("/api/v1/orders", json=body, headers=headers)


async def wait_for_status(client: Client, issuer: TestIssuer, url: str) -> dict[str, Any]:

    async def settled() -> dict[str, Any] | None:
        resp = await client.get(url, headers=auth(issuer))
        doc: dict[str, Any] = await resp.json()
        return doc if doc["status"] != "PENDING" else None

    return await wait_until_async(settled, 5, f"{url} no longer PENDING", interval=0.01)


async def test_place_order_202_then_confirmed(client: Client, issuer: TestIssuer) -> None:
    resp = await post(client, issuer)
    assert resp.status == 202
    doc = await resp.json()
    assert resp.headers["Location"] == f"/api/v1/orders/{doc['id']}"
    assert doc["status"] == "PENDING" and doc["total"] == "79.80" and doc["currency"] == "EUR"
    assert doc["items"] == [{"sku": "BK-0001", "quantity": 2, "unit_price": "39.90"}]
    done = await wait_for_status(client, issuer, resp.headers["Location"])
    assert done["status"] == "CONFIRMED" and done["payment_id"] == "pay-1"
    assert done["reason"] is None


async def test_declined_card_is_rejected_with_reason(client: Client, issuer: TestIssuer) -> None:
    resp = await post(client, issuer, {**BODY, "payment_method": "pm_card_declined"})
    done = await wait_for_status(client, issuer, resp.headers["Location"])
    assert done["status"] == "REJECTED" and done["reason"].startswith("payment declined")


async def test_idempotency_key(client: Client, issuer: TestIssuer) -> None:
    first = await post(client, issuer)
    again = await post(client, issuer)
    assert again.status == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert (await again.json())["id"] == (await first.json())["id"]
    other = await post(client, issuer, {**BODY, "payment_method": "pm_card_declined"})
    assert other.status == 422
    assert "Idempotency-Key" in (await other.json())["errors"]
    missing = await post(client, issuer, key=None)  # the same answer as payments'
    assert missing.status == 400 and missing.content_type == "application/problem+json"
    doc = await missing.json()
    assert doc["type"] == IDEMPOTENCY_KEY_MISSING and "Idempotency-Key" in doc["errors"]
    malformed = await post(client, issuer, key="k" * 256)
    assert malformed.status == 422
    assert (await malformed.json())["type"] == "https://portico.dev/problems/validation"
    bad = await post(client, issuer, key="with space")
    assert bad.status == 422


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"items": [], "payment_method": "pm_card_ok"}, "items"),
        ({"items": [{"sku": "BK-0001", "quantity": 0}], "payment_method": "pm_card_ok"}, "items"),
        ({"items": [{"sku": "BK-0001", "quantity": -1}], "payment_method": "pm_card_ok"}, "items"),
        ({"items": [{"sku": "BK-0001", "quantity": "2"}], "payment_method": "pm_card_ok"}, "items"),
        ({"items": [{"sku": "NO-SUCH", "quantity": 1}], "payment_method": "pm_card_ok"}, "items"),
        ({"items": [{"sku": "bad sku", "quantity": 1}], "payment_method": "pm_card_ok"}, "items"),
        (
            {
                "items": [{"sku": "BK-0001", "quantity": 1}, {"sku": "BK-0001", "quantity": 1}],
                "payment_method": "pm_card_ok",
            },
            "items",
        ),
        ({"items": [{"sku": "BK-0001", "quantity": 1}]}, "payment_method"),
        ({**BODY, "payment_method": "4242424242424242"}, "payment_method"),
        ({**BODY, "card_number": "4242424242424242"}, "card_number"),
        ([1, 2], "_schema"),
    ],
)
async def test_bad_orders_are_422_naming_the_field_and_store_nothing(
    client: Client, issuer: TestIssuer, body: Any, field: str
) -> None:
    resp = await post(client, issuer, body)
    assert resp.status == 422, await resp.text()
    assert resp.content_type == "application/problem+json"
    assert field in (await resp.json())["errors"]
    listing = await client.get("/api/v1/orders", headers=auth(issuer))
    assert (await listing.json())["items"] == []


async def test_malformed_oversized_and_non_json_bodies(
    client: Client, issuer: TestIssuer, settings: OrdersSettings
) -> None:
    headers = {**auth(issuer), "Idempotency-Key": "k", "Content-Type": "application/json"}
    resp = await client.post("/api/v1/orders", data=b"{nope", headers=headers)
    assert resp.status == 400 and resp.content_type == "application/problem+json"
    big = b'{"items": [], "x": "' + b"a" * settings.max_body_bytes + b'"}'
    resp = await client.post("/api/v1/orders", data=big, headers=headers)
    assert resp.status == 413 and resp.content_type == "application/problem+json"
    headers["Content-Type"] = "text/plain"
    resp = await client.post("/api/v1/orders", data=b"hi", headers=headers)
    assert resp.status == 415


async def test_auth_and_scopes(client: Client, issuer: TestIssuer) -> None:
    resp = await client.post("/api/v1/orders", json=BODY, headers={"Idempotency-Key": "k"})
    assert resp.status == 401 and "Bearer" in resp.headers["WWW-Authenticate"]
    resp = await post(client, issuer, scopes=("orders:read",))
    assert resp.status == 403
    resp = await client.get("/api/v1/orders", headers=auth(issuer, scopes=("orders:write",)))
    assert resp.status == 403


async def test_orders_belong_to_the_token_subject(client: Client, issuer: TestIssuer) -> None:
    resp = await post(client, issuer, sub="alice")
    url = resp.headers["Location"]
    assert (await client.get(url, headers=auth(issuer, sub="bob"))).status == 404
    # Same key, other owner: a separate order.
    bob = await post(client, issuer, sub="bob")
    assert (await bob.json())["id"] != (await resp.json())["id"]
    mine = await client.get("/api/v1/orders", headers=auth(issuer, sub="bob"))
    assert [o["id"] for o in (await mine.json())["items"]] == [(await bob.json())["id"]]


async def test_read_all_scope_sees_everyones_orders(client: Client, issuer: TestIssuer) -> None:
    """Two users' orders: each sees only their own (the other's is 404, never listed); a token
    with orders:read:all gets and lists both, page by page."""
    alices = await (await post(client, issuer, sub="alice", key="a")).json()
    bobs = await (await post(client, issuer, sub="bob", key="b")).json()
    alice = auth(issuer, sub="alice")
    missing = await client.get("/api/v1/orders/no-such-order", headers=alice)
    other = await client.get(f"/api/v1/orders/{bobs['id']}", headers=alice)
    assert other.status == missing.status == 404  # the same answer: existence not revealed
    assert (await other.json())["title"] == (await missing.json())["title"]
    listed = await (await client.get("/api/v1/orders", headers=alice)).json()
    assert [o["id"] for o in listed["items"]] == [alices["id"]]

    staff = auth(issuer, sub="carol", scopes=("orders:read", "orders:read:all"))
    for order in (alices, bobs):
        resp = await client.get(f"/api/v1/orders/{order['id']}", headers=staff)
        assert resp.status == 200 and (await resp.json())["id"] == order["id"]
    first = await (await client.get("/api/v1/orders?limit=1", headers=staff)).json()
    cursor = first["next_cursor"]
    rest = await (await client.get(f"/api/v1/orders?cursor={cursor}", headers=staff)).json()
    seen = [o["id"] for o in first["items"] + rest["items"]]
    assert seen == [bobs["id"], alices["id"]] and rest["next_cursor"] is None
    # the staff scope widens reads only: without orders:read it is refused
    only_all = auth(issuer, sub="carol", scopes=("orders:read:all",))
    assert (await client.get("/api/v1/orders", headers=only_all)).status == 403


async def test_listing_pages_and_filters(client: Client, issuer: TestIssuer) -> None:
    ids = [(await (await post(client, issuer, key=f"k{i}")).json())["id"] for i in range(3)]
    seen: list[str] = []
    url = "/api/v1/orders?limit=2"
    while url:
        doc = await (await client.get(url, headers=auth(issuer))).json()
        seen += [o["id"] for o in doc["items"]]
        url = f"/api/v1/orders?limit=2&cursor={doc['next_cursor']}" if doc["next_cursor"] else ""
    assert seen == ids[::-1]
    for params, field in (("limit=0", "limit"), ("cursor=zzz", "cursor"), ("status=X", "status")):
        resp = await client.get(f"/api/v1/orders?{params}", headers=auth(issuer))
        assert resp.status == 422 and field in (await resp.json())["errors"]


async def test_health_metrics_and_openapi(client: Client) -> None:
    assert (await client.get("/health/live")).status == 200
    ready = await client.get("/health/ready")
    assert ready.status == 200 and (await ready.json())["checks"] == {"database": "ok"}
    assert "orders_saga_outcomes_total" in await (await client.get("/metrics")).text()
    spec = await (await client.get("/openapi.json")).json()
    assert set(spec["paths"]) == {
        "/api/v1/orders",
        "/api/v1/orders/{order_id}",
        "/api/v1/orders/{order_id}/history",
        "/internal/v1/events",
    }
    assert set(spec["paths"]["/api/v1/orders"]) >= {"get", "post"}
    assert "Order" in spec["components"]["schemas"]


async def test_readiness_fails_before_init(
    aiohttp_client: Callable[[web.Application], Awaitable[Client]],
    tmp_path: Any,
    issuer: TestIssuer,
) -> None:
    settings = OrdersSettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'none.db'}", publish_events=False
    )
    app = create_app(settings, verifier=issuer.async_verifier(), upstreams=FakeUpstreams())
    client = await aiohttp_client(app)
    resp = await client.get("/health/ready")
    assert resp.status == 503 and (await resp.json())["checks"]["database"].startswith("failed")
