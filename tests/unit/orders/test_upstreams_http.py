"""`HttpUpstreams` against fake catalog, inventory, payments and token endpoints served by
aiohttp on free ports: status mapping, keys and tokens sent, retries, the circuit breaker."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from decimal import Decimal
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from prometheus_client import CollectorRegistry, generate_latest

from chassis.resilience import Retry
from chassis.service_token import ServiceToken
from services.orders.adapters.upstreams import SERVICE_SCOPE, HttpUpstreams, Transient
from services.orders.domain import (
    Captured,
    Committed,
    Declined,
    Line,
    OutOfStock,
    Priced,
    Refunded,
    Refused,
    Released,
    Reserved,
    Unavailable,
    UnknownSkus,
)


class Fake:
    """One app playing every upstream; `answers` maps a route name to (status, body)."""

    def __init__(self) -> None:
        self.answers: dict[str, tuple[int, Any]] = {}
        self.calls: Counter[str] = Counter()
        self.seen: list[tuple[str, dict[str, str], Any]] = []
        self.tokens_issued = 0

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/oauth/token", self.token)
        app.router.add_get("/api/v1/products", self.route("products"))
        app.router.add_post("/api/v1/reservations", self.route("reserve"))
        app.router.add_post("/api/v1/reservations/{id}/commit", self.route("commit"))
        app.router.add_post("/api/v1/reservations/{id}/release", self.route("release"))
        app.router.add_post("/api/v1/payments", self.route("charge"))
        app.router.add_post("/api/v1/payments/{id}/refund", self.route("refund"))
        return app

    async def token(self, request: web.Request) -> web.Response:
        form = await request.post()
        assert request.headers["Authorization"].startswith("Basic ")
        assert form["grant_type"] == "client_credentials" and form["scope"] == SERVICE_SCOPE
        self.tokens_issued += 1
        return web.json_response(
            {"access_token": f"tok-{self.tokens_issued}", "expires_in": 900, "token_type": "Bearer"}
        )

    def route(self, name: str) -> Callable[[web.Request], Awaitable[web.Response]]:
        async def handler(request: web.Request) -> web.Response:
            self.calls[name] += 1
            body = await request.json() if request.can_read_body else None
            self.seen.append((name, dict(request.headers), {**request.query, "body": body}))
            status, doc = self.answers.get(name, (200, {}))
            if callable(doc):
                doc = doc(request)
            return web.json_response(doc, status=status)

        return handler


@pytest.fixture
async def fake(aiohttp_server: Callable[..., Awaitable[TestServer]]) -> AsyncIterator[Any]:
    f = Fake()
    server = await aiohttp_server(f.app())
    f.url = str(server.make_url("")).rstrip("/")  # type: ignore[attr-defined]
    yield f


@pytest.fixture
async def upstreams(fake: Any, tmp_path: Path) -> AsyncIterator[HttpUpstreams]:
    creds = tmp_path / "client.json"
    creds.write_text(json.dumps({"client_id": "orders-service", "client_secret": "s3cret"}))
    async with aiohttp.ClientSession() as session:
        token = ServiceToken(session, f"{fake.url}/oauth/token", SERVICE_SCOPE, client_file=creds)
        yield HttpUpstreams(
            session,
            token,
            catalog_url=fake.url,
            inventory_url=fake.url,
            payments_url=fake.url,
            retry=Retry(attempts=3, base_delay=0.001, max_delay=0.002, retry_on=(Transient,)),
            failure_threshold=4,
            recovery_timeout=60,
            registry=CollectorRegistry(),
        )


def product(request: web.Request) -> dict[str, Any]:
    sku = request.query["sku"]
    if sku == "NO-SUCH":
        return {"items": [], "next_cursor": None}
    return {"items": [{"sku": sku, "price": "39.90", "currency": "EUR"}], "next_cursor": None}


async def test_prices_by_sku_with_a_cached_service_token(
    fake: Any, upstreams: HttpUpstreams
) -> None:
    fake.answers["products"] = (200, product)
    assert await upstreams.prices(["BK-0001", "EL-0001"]) == Priced(
        {"BK-0001": Decimal("39.90"), "EL-0001": Decimal("39.90")}
    )
    assert await upstreams.prices(["BK-0001", "NO-SUCH"]) == UnknownSkus(("NO-SUCH",))
    assert fake.tokens_issued == 1  # cached across calls
    assert {h["Authorization"] for _, h, _ in fake.seen} == {"Bearer tok-1"}
    assert {q["sku"] for _, _, q in fake.seen} == {"BK-0001", "EL-0001", "NO-SUCH"}


async def test_reservation_outcomes(fake: Any, upstreams: HttpUpstreams) -> None:
    lines = [Line("BK-0001", 2)]
    fake.answers["reserve"] = (201, {"order_id": "o1", "status": "RESERVED"})
    assert await upstreams.reserve("o1", lines) == Reserved()
    assert fake.seen[-1][2]["body"] == {
        "order_id": "o1",
        "items": [{"sku": "BK-0001", "quantity": 2}],
    }
    fake.answers["reserve"] = (409, {"title": "Out of stock", "skus": ["BK-0001"]})
    assert await upstreams.reserve("o1", lines) == OutOfStock(("BK-0001",))
    fake.answers["reserve"] = (409, {"detail": "reservation is RELEASED"})
    assert await upstreams.reserve("o1", lines) == Refused("reservation is RELEASED")
    fake.answers["commit"] = (200, {"status": "COMMITTED"})
    assert await upstreams.commit("o1") == Committed()
    fake.answers["release"] = (200, {"status": "RELEASED"})
    assert await upstreams.release("o1") == Released()
    fake.answers["release"] = (409, {"detail": "committed"})
    assert isinstance(await upstreams.release("o1"), Unavailable)


async def test_charge_outcomes_and_the_idempotency_key(fake: Any, upstreams: HttpUpstreams) -> None:
    fake.answers["charge"] = (
        201,
        {"id": "pay-1", "order_id": "o1", "amount": "79.80", "status": "CAPTURED"},
    )
    assert await upstreams.charge(
        "o1", Decimal("79.80"), "EUR", "pm_card_ok", owner="alice"
    ) == Captured("pay-1", Decimal("79.80"), "EUR")
    _, headers, query = fake.seen[-1]
    assert headers["Idempotency-Key"] == "charge-o1"
    assert query["body"] == {
        "order_id": "o1",
        "amount": "79.80",
        "currency": "EUR",
        "payment_method": "pm_card_ok",
        "owner": "alice",  # the order's owner: the payment is theirs at payments
    }
    fake.answers["charge"] = (402, {"detail": "card declined", "code": "card_declined"})
    assert await upstreams.charge(
        "o1", Decimal(1), "EUR", "pm_card_declined", owner="alice"
    ) == Declined("card declined")
    fake.answers["refund"] = (200, {"status": "REFUNDED"})
    assert await upstreams.refund("o1", "pay-1") == Refunded()
    assert fake.seen[-1][1]["Idempotency-Key"] == "refund-o1"


async def test_5xx_is_retried_then_unavailable_and_opens_the_breaker(
    fake: Any, upstreams: HttpUpstreams
) -> None:
    fake.answers["charge"] = (503, {"detail": "provider outage"})
    outcome = await upstreams.charge("o1", Decimal(1), "EUR", "pm_card_error", owner="alice")
    assert isinstance(outcome, Unavailable) and "503" in outcome.error
    assert fake.calls["charge"] == 3  # retried: the call is keyed
    await upstreams.charge(
        "o1", Decimal(1), "EUR", "pm_card_error", owner="alice"
    )  # 4th failure: opens
    assert upstreams.payments.breaker.state == "open"
    before = fake.calls["charge"]
    outcome = await upstreams.charge("o1", Decimal(1), "EUR", "pm_card_ok", owner="alice")
    assert isinstance(outcome, Unavailable) and "open" in outcome.error
    assert fake.calls["charge"] == before  # nothing sent while open
    # The other dependencies have their own breakers.
    fake.answers["commit"] = (200, {})
    assert await upstreams.commit("o1") == Committed()


async def test_business_answers_do_not_trip_the_breaker(
    fake: Any, upstreams: HttpUpstreams
) -> None:
    fake.answers["charge"] = (402, {"detail": "declined"})
    for _ in range(6):
        assert isinstance(
            await upstreams.charge("o", Decimal(1), "EUR", "pm", owner="alice"), Declined
        )
    assert upstreams.payments.breaker.state == "closed"


async def test_connection_refused_is_unavailable() -> None:
    async with aiohttp.ClientSession() as session:
        token = ServiceToken(
            session,
            "http://127.0.0.1:9/oauth/token",
            SERVICE_SCOPE,
            client_id="a",
            client_secret="b",
            timeout=1,
        )
        up = HttpUpstreams(
            session,
            token,
            catalog_url="http://127.0.0.1:9",
            inventory_url="http://127.0.0.1:9",
            payments_url="http://127.0.0.1:9",
            registry=CollectorRegistry(),
        )
        outcome = await up.release("o1")
        assert isinstance(outcome, Unavailable) and "token" in outcome.error


async def test_a_refused_token_is_fetched_again(fake: Any, upstreams: HttpUpstreams) -> None:
    fake.answers["commit"] = (401, {"detail": "expired"})
    assert isinstance(await upstreams.commit("o1"), Unavailable)
    assert fake.tokens_issued == 3  # each 401 dropped the token; every attempt fetched anew


def test_breaker_state_is_a_metric() -> None:
    registry = CollectorRegistry()
    HttpUpstreams(
        aiohttp.ClientSession.__new__(aiohttp.ClientSession),
        ServiceToken.__new__(ServiceToken),
        catalog_url="http://c",
        inventory_url="http://i",
        payments_url="http://p",
        registry=registry,
    )
    text = generate_latest(registry).decode()
    for name in ("catalog", "inventory", "payments"):
        assert f'circuit_breaker_state{{name="{name}"}} 0.0' in text
