"""The gateway as a consumer of every service it routes to.

The gateway is a proxy: its client code is its request path and transport. Each example
request goes to a real gateway (`create_app` with the packaged gateway.yaml, every upstream
pointed at that provider's Pact mock server, tokens from a test issuer) and the gateway's
transport makes the upstream request the pact records. The boundary label of each
interaction comes from the gateway's own router. Error answers the gateway passes through
(404, 422, 401) are part of the contract.
"""

from __future__ import annotations

import asyncio
import dataclasses
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from pact import Pact, match

from gateway.app import create_app
from gateway.config import GatewayConfig, HealthCheck, load_config
from gateway.routing import Router

from . import ConsumerFailed, label

__all__ = ["AGGREGATES", "EXAMPLES", "Aggregate", "Example", "Part", "run"]

CONSUMER = "gateway"
BEARER = match.regex("Bearer eyJ.example.token", regex=r"^Bearer \S+$")
PROBLEM = "application/problem+json"
JSON = "application/json"
ALL_SCOPES = [
    "profile",
    "catalog:read",
    "catalog:write",
    "inventory:read",
    "inventory:write",
    "orders:read",
    "orders:write",
    "payments:read",
    "notifications:read",
    "reports:read",
]


def problem(status: int, **extra: Any) -> dict[str, Any]:
    return {"status": status, "title": match.str("Not Found"), **extra}


@dataclass
class Example:
    """One public request through the gateway, and what the upstream must answer."""

    description: str
    method: str
    path: str  # public path (the pact records the path the gateway sends upstream)
    status: int
    body: Any = None  # expected response body (with matchers)
    content_type: str = JSON
    state: tuple[str, dict[str, Any]] | None = None
    query: dict[str, str] = field(default_factory=dict)
    request_body: Any = None
    request_type: str = JSON
    request_headers: dict[str, Any] = field(default_factory=dict)
    response_headers: dict[str, Any] = field(default_factory=dict)
    token: bool = True


PRODUCT = {
    "id": match.str("3f0c5a4e-9d1b-4a4c-8e60-0f8a1b2c3d4e"),
    "sku": match.str("SKU-1"),
    "name": match.str("Widget"),
    "category": match.str("tools"),
    "price": match.regex("9.99", regex=r"^\d+\.\d{2}$"),
    "version": match.int(1),
}
LEVEL = {"sku": "SKU-1", "on_hand": match.int(10), "available": match.int(10)}
ORDER = {
    "id": match.str("7d5e2c1a-0000-4000-8000-000000000001"),
    "status": match.regex("PENDING", regex=r"^(PENDING|CONFIRMED|REJECTED)$"),
    "items": match.each_like({"sku": match.str("SKU-1"), "quantity": match.int(1)}),
    "payment_method": match.str("pm_card_ok"),
}
PAYMENT = {
    "id": match.str("b1d4e0a2-0000-4000-8000-000000000001"),
    "order_id": match.str("ord-1"),
    "amount": match.regex("19.98", regex=r"^\d+\.\d{2}$"),
    "currency": match.str("EUR"),
    "status": match.regex("CAPTURED", regex=r"^(PENDING|CAPTURED|DECLINED|REFUNDED)$"),
}
NOTE = {
    "id": match.str("c2e5f1b3-0000-4000-8000-000000000001"),
    "subject": match.str("Your order ord-1 is confirmed"),
    "event_type": match.str("order.confirmed"),
    "read": match.bool(False),
}

MY_ORDER = {
    "id": match.str("ord-1"),
    "status": match.regex("CONFIRMED", regex=r"^(PENDING|CONFIRMED|REJECTED)$"),
    "total": match.regex("19.98", regex=r"^\d+\.\d{2}$"),
    "currency": match.str("EUR"),
    "payment_state": match.regex("captured", regex=r"^(pending|captured|declined|refunded)$"),
    "notifications": match.int(0),
}
SALE = {
    "day": match.regex("2026-06-01", regex=r"^\d{4}-\d\d-\d\d$"),
    "sku": match.str("SKU-1"),
    "units": match.int(2),
    "revenue": match.regex("19.98", regex=r"^\d+\.\d{2}$"),
}

EXAMPLES: dict[str, list[Example]] = {
    "identity": [
        Example(
            "a client_credentials token request",
            "POST",
            "/oauth/token",
            200,
            {
                "access_token": match.str("eyJ.example.token"),
                "token_type": match.regex("Bearer", regex=r"^(?i:bearer)$"),
                "expires_in": match.int(900),
            },
            state=("a client with a known secret", {"secret": "contract-secret"}),
            request_body="grant_type=client_credentials&scope=catalog%3Aread",
            request_type="application/x-www-form-urlencoded",
            request_headers={"Authorization": "Basic cG9ydGljby1kZXY6Y29udHJhY3Qtc2VjcmV0"},
            token=False,
        ),
        Example(
            "a token request with a wrong client secret",
            "POST",
            "/oauth/token",
            401,
            {"error": "invalid_client"},
            state=("a client with a known secret", {"secret": "contract-secret"}),
            request_body="grant_type=client_credentials",
            request_type="application/x-www-form-urlencoded",
            request_headers={"Authorization": "Basic cG9ydGljby1kZXY6d3Jvbmc="},
            token=False,
        ),
        Example(
            "an authorization request for an unknown client",
            "GET",
            "/oauth/authorize",
            400,
            problem(400, error="invalid_client"),
            content_type=PROBLEM,
            query={"response_type": "code", "client_id": "no-such-client"},
            token=False,
        ),
        Example(
            "the JWKS",
            "GET",
            "/.well-known/jwks.json",
            200,
            {"keys": match.each_like({"kty": match.str("RSA"), "kid": match.str("k1")})},
            token=False,
        ),
        Example(
            "a registration",
            "POST",
            "/api/v1/users",
            201,
            {"id": match.str("u1"), "username": "carol", "email": "carol@example.com"},
            request_body={
                "username": "carol",
                "email": "carol@example.com",
                "password": "s3cret-pass",
            },
            response_headers={
                "Location": match.regex("/api/v1/users/u1", regex=r"/api/v1/users/\S+$")
            },
            token=False,
        ),
        Example(
            "a registration with an invalid email",
            "POST",
            "/api/v1/users",
            422,
            problem(
                422, errors={"email": match.each_like(match.str("Not a valid email address."))}
            ),
            content_type=PROBLEM,
            request_body={"username": "dave", "email": "not-an-email", "password": "s3cret-pass"},
            token=False,
        ),
        Example(
            "the signed-in user's profile",
            "GET",
            "/api/v1/users/me",
            200,
            {"id": match.str("u1"), "username": "alice", "email": match.str("alice@example.com")},
            state=("a user is signed in", {"username": "alice"}),
        ),
    ],
    "catalog": [
        Example(
            "a page of products",
            "GET",
            "/api/v1/products",
            200,
            {"items": match.each_like(PRODUCT)},
            state=("a product exists", {"id": "prod-1", "sku": "SKU-1"}),
            query={"limit": "10"},
        ),
        Example(
            "a product",
            "GET",
            "/api/v1/products/prod-1",
            200,
            PRODUCT,
            state=("a product exists", {"id": "prod-1", "sku": "SKU-1"}),
            response_headers={"ETag": match.regex('"v1"', regex=r'^"v\d+"$')},
        ),
        Example(
            "a product that does not exist",
            "GET",
            "/api/v1/products/prod-missing",
            404,
            problem(404),
            content_type=PROBLEM,
        ),
        Example(
            "a new product",
            "POST",
            "/api/v1/products",
            201,
            {**PRODUCT, "sku": "SKU-NEW"},
            request_body={"sku": "SKU-NEW", "name": "Gadget", "category": "tools", "price": "4.50"},
            request_headers={"Idempotency-Key": match.str("key-new")},
        ),
        Example(
            "a product without a name",
            "POST",
            "/api/v1/products",
            422,
            problem(422, errors={"name": match.each_like(match.str("Missing data"))}),
            content_type=PROBLEM,
            request_body={"sku": "SKU-BAD", "category": "tools", "price": "4.50"},
            request_headers={"Idempotency-Key": match.str("key-bad")},
        ),
        Example(
            "a price change",
            "PATCH",
            "/api/v1/products/prod-1",
            200,
            {**PRODUCT, "price": "12.50"},
            state=("a product exists", {"id": "prod-1", "sku": "SKU-1"}),
            request_body={"price": "12.50"},
        ),
        Example(
            "a product replaced",
            "PUT",
            "/api/v1/products/prod-1",
            200,
            {**PRODUCT, "name": "Widget II", "price": "11.00"},
            state=("a product exists", {"id": "prod-1", "sku": "SKU-1"}),
            request_body={
                "sku": "SKU-1",
                "name": "Widget II",
                "category": "tools",
                "price": "11.00",
            },
        ),
        Example(
            "a product deleted",
            "DELETE",
            "/api/v1/products/prod-1",
            204,
            state=("a product exists", {"id": "prod-1", "sku": "SKU-1"}),
        ),
    ],
    "inventory": [
        Example(
            "a stock level",
            "GET",
            "/api/v1/inventory/SKU-1",
            200,
            LEVEL,
            state=("stock exists", {"sku": "SKU-1", "on_hand": 10}),
        ),
        Example(
            "the stock level of an unknown sku",
            "GET",
            "/api/v1/inventory/SKU-NONE",
            404,
            problem(404),
            content_type=PROBLEM,
        ),
        Example(
            "a stock level set",
            "PUT",
            "/api/v1/inventory/SKU-2",
            200,
            {**LEVEL, "sku": "SKU-2"},
            request_body={"on_hand": 5},
        ),
    ],
    "orders": [
        Example(
            "an order placed",
            "POST",
            "/api/v1/orders",
            202,
            ORDER,
            request_body={
                "items": [{"sku": "SKU-1", "quantity": 1}],
                "payment_method": "pm_card_ok",
            },
            request_headers={"Idempotency-Key": match.str("key-1")},
            response_headers={
                "Location": match.regex("/api/v1/orders/x", regex=r"/api/v1/orders/\S+$")
            },
        ),
        Example(
            "an order",
            "GET",
            "/api/v1/orders/ord-1",
            200,
            ORDER,
            state=("an order exists", {"id": "ord-1"}),
        ),
        Example(
            "an order that does not exist",
            "GET",
            "/api/v1/orders/ord-missing",
            404,
            problem(404),
            content_type=PROBLEM,
        ),
        Example(
            "an order as it was at a time that is not RFC 3339",
            "GET",
            "/api/v1/orders/ord-1",
            422,
            problem(422, errors={"as_of": match.each_like(match.str("not an RFC 3339"))}),
            content_type=PROBLEM,
            state=("an order exists", {"id": "ord-1"}),
            query={"as_of": "yesterday"},
        ),
        Example(
            "an order's history",
            "GET",
            "/api/v1/orders/ord-1/history",
            200,
            {
                "order_id": match.str("7d5e2c1a-0000-4000-8000-000000000001"),
                "events": match.each_like(
                    {
                        "version": match.int(1),
                        "type": match.regex("order.created", regex=r"^order\.[a-z_]+$"),
                        "occurred_at": match.str("2026-01-01T12:00:00.000000Z"),
                        "data": {"order_id": match.str("7d5e2c1a"), "owner": match.str("u")},
                    }
                ),
            },
            state=("an order exists", {"id": "ord-1"}),
        ),
        Example(
            "the caller's orders",
            "GET",
            "/api/v1/orders",
            200,
            {"items": match.each_like(ORDER)},
            state=("an order exists", {"id": "ord-1"}),
        ),
    ],
    "payments": [
        Example(
            "an order's payments",
            "GET",
            "/api/v1/payments",
            200,
            {"items": match.each_like(PAYMENT)},
            state=("a payment was captured", {"id": "pay-1", "order_id": "ord-1"}),
            query={"order_id": "ord-1"},
        ),
        Example(
            "a payment",
            "GET",
            "/api/v1/payments/pay-1",
            200,
            PAYMENT,
            state=("a payment was captured", {"id": "pay-1", "order_id": "ord-1"}),
        ),
        Example(
            "a payment that does not exist",
            "GET",
            "/api/v1/payments/pay-missing",
            404,
            problem(404),
            content_type=PROBLEM,
        ),
    ],
    "notifications": [
        Example(
            "the caller's notifications",
            "GET",
            "/api/v1/notifications",
            200,
            {"items": match.each_like(NOTE)},
            state=("a notification exists", {"id": "note-1"}),
        ),
        Example(
            "a notification marked read",
            "POST",
            "/api/v1/notifications/note-1/read",
            200,
            {**NOTE, "read": True},
            state=("a notification exists", {"id": "note-1"}),
        ),
        Example(
            "marking an unknown notification read",
            "POST",
            "/api/v1/notifications/note-missing/read",
            404,
            problem(404),
            content_type=PROBLEM,
        ),
        # The live streams (ADR 0035): an open stream never ends, so what a contract can pin
        # down is how they refuse - relayed by the gateway as any route's answer.
        Example(
            "a notification stream resumed from an id it never sent",
            "GET",
            "/api/v1/notifications/stream",
            400,
            problem(400),
            content_type=PROBLEM,
            request_headers={"Last-Event-ID": "not-an-id!"},
        ),
        Example(
            "the notifications WebSocket asked without an upgrade",
            "GET",
            "/api/v1/notifications/ws",
            426,
            problem(426),
            content_type=PROBLEM,
            response_headers={"Upgrade": "websocket"},
        ),
    ],
    "views": [
        Example(
            "the caller's orders from the read model",
            "GET",
            "/api/v1/me/orders",
            200,
            {"items": match.each_like(MY_ORDER)},
            state=("a confirmed order is in the read models", {"id": "ord-1", "sku": "SKU-1"}),
            response_headers={"X-Read-Model-Lag": match.regex("0.0", regex=r"^\d+\.\d$")},
        ),
        Example(
            "a sales report",
            "GET",
            "/api/v1/reports/sales",
            200,
            {"items": match.each_like(SALE), "totals": match.each_like({"units": match.int(2)})},
            state=("a confirmed order is in the read models", {"id": "ord-1", "sku": "SKU-1"}),
            query={"from": "2026-06-01", "to": "2026-06-30"},
        ),
        Example(
            "a sales report for a range that ends before it starts",
            "GET",
            "/api/v1/reports/sales",
            422,
            problem(422),
            content_type=PROBLEM,
            query={"from": "2026-06-30", "to": "2026-06-01"},
        ),
        Example(
            "products bought together",
            "GET",
            "/api/v1/products/prod-1/recommendations",
            200,
            {
                "sku": match.str("SKU-1"),
                "items": match.each_like({"sku": match.str("SKU-2"), "orders": match.int(1)}),
            },
            state=("a product was bought with another", {"id": "prod-1", "sku": "SKU-1"}),
        ),
        Example(
            "recommendations for an unknown product",
            "GET",
            "/api/v1/products/prod-missing/recommendations",
            404,
            problem(404),
            content_type=PROBLEM,
        ),
    ],
}

# --- API v2 of products (docs/migrations/v1-to-v2.md): price as {amount, currency}, behind
# the catalog.v2_products flag; the provider state's `v2` says whether it is on for the caller.
PRODUCT_V2 = {
    **{k: v for k, v in PRODUCT.items() if k != "price"},
    "price": {
        "amount": match.regex("9.99", regex=r"^\d+\.\d{2}$"),
        "currency": match.regex("EUR", regex=r"^[A-Z]{3}$"),
    },
}
EXAMPLES["catalog"] += [
    Example(
        "a page of products in API v2",
        "GET",
        "/api/v2/products",
        200,
        {"items": match.each_like(PRODUCT_V2)},
        state=("a product exists", {"id": "prod-1", "sku": "SKU-1", "v2": "on"}),
        query={"limit": "10"},
    ),
    Example(
        "a product in API v2",
        "GET",
        "/api/v2/products/prod-1",
        200,
        PRODUCT_V2,
        state=("a product exists", {"id": "prod-1", "sku": "SKU-1", "v2": "on"}),
        response_headers={"ETag": match.regex('"v1"', regex=r'^"v\d+"$')},
    ),
    Example(
        "a product in API v2 for a client the flag is off for",
        "GET",
        "/api/v2/products/prod-2",  # another request than the one answered 200
        404,
        problem(404),
        content_type=PROBLEM,
        state=("a product exists", {"id": "prod-2", "sku": "SKU-2", "v2": "off"}),
    ),
]


@dataclass
class Part:
    """What one aggregate part sends (its expressions filled in from the example answers of
    the parts before it) and what its upstream must answer."""

    name: str
    path: str  # public path, query included, as the part sends it
    body: Any
    state: tuple[str, dict[str, Any]] | None = None
    status: int = 200


@dataclass
class Aggregate:
    """One call of an aggregate through the gateway; each part is an interaction with the
    upstream of the route the part resolves to, labelled `aggregate:<name>.<part>`."""

    description: str
    name: str
    path: str
    parts: list[Part]


USER = {"id": match.str("u1"), "username": "alice", "email": match.str("alice@example.com")}
SIGNED_IN = ("a user is signed in", {"username": "alice"})

AGGREGATES = [
    Aggregate(
        "an order's details",
        "orders.details",
        "/api/v1/orders/ord-2/details",
        [
            Part(
                "order",
                "/api/v1/orders/ord-2",
                {**ORDER, "payment_id": match.str("pay-1")},
                ("a confirmed order exists", {"id": "ord-2", "payment_id": "pay-1"}),
            ),
            Part(
                "products",
                "/api/v1/products?sku=SKU-1",
                {"items": match.each_like(PRODUCT)},
                ("a product exists", {"id": "prod-1", "sku": "SKU-1"}),
            ),
            Part(
                "payment",
                "/api/v1/payments/pay-1",
                PAYMENT,
                ("a payment was captured", {"id": "pay-1", "order_id": "ord-2"}),
            ),
            Part("user", "/api/v1/users/me", USER, SIGNED_IN),
        ],
    ),
    Aggregate(
        "the caller's dashboard",
        "me.dashboard",
        "/api/v1/me/dashboard",
        [
            Part("profile", "/api/v1/users/me", USER, SIGNED_IN),
            Part(
                "recent_orders",
                "/api/v1/orders?limit=5",
                {"items": match.each_like(ORDER)},
                ("an order exists", {"id": "ord-1"}),
            ),
            Part(
                "unread_notifications",
                "/api/v1/notifications?unread=true",
                {"items": match.each_like(NOTE)},
                ("a notification exists", {"id": "note-1"}),
            ),
        ],
    ),
]


def _route_label(router: Router, method: str, path: str) -> tuple[str, str]:
    """The route the gateway itself picks, and the upstream path it sends."""
    found = router.match(path)
    route = found[0].routes.get(method) if found else None
    if route is None:
        raise ConsumerFailed(f"gateway: no route for {method} {path}")
    return f"route:{route.name} {method}", route.target(path, found[1] if found else None)


def _define(pact: Pact, ex: Example, router: Router) -> None:
    item, upstream_path = _route_label(router, ex.method, ex.path)
    i = pact.upon_receiving(ex.description)
    label(i, item)
    if ex.state:
        i.given(ex.state[0], **ex.state[1])
    i.with_request(ex.method, upstream_path)
    for k, v in ex.query.items():
        i.with_query_parameter(k, v)
    if ex.token:
        i.with_header("Authorization", BEARER)
    for k, v in ex.request_headers.items():
        i.with_header(k, v)
    if ex.request_body is not None:
        i.with_body(ex.request_body, content_type=ex.request_type)
    i.will_respond_with(ex.status)
    for k, v in ex.response_headers.items():
        i.with_header(k, v)
    if ex.body is not None:
        i.with_body(ex.body, content_type=ex.content_type)


def _define_part(pacts: dict[str, Pact], agg: Aggregate, part: Part, router: Router) -> None:
    path, _, query = part.path.partition("?")
    found = router.match(path)
    route = found[0].routes.get("GET") if found else None
    if route is None:
        raise ConsumerFailed(f"gateway: aggregate {agg.name}: no GET route for {path}")
    if route.upstream not in pacts:
        pacts[route.upstream] = Pact(CONSUMER, route.upstream).with_specification("V4")
    i = pacts[route.upstream].upon_receiving(f"{agg.description}: part {part.name}")
    label(i, f"aggregate:{agg.name}.{part.name}")
    if part.state:
        i.given(part.state[0], **part.state[1])
    i.with_request("GET", route.target(path, found[1] if found else None))
    for k, _, v in (q.partition("=") for q in query.split("&") if q):
        i.with_query_parameter(k, v)
    i.with_header("Authorization", BEARER)
    i.will_respond_with(part.status).with_body(part.body, content_type=JSON)


def _example_value(value: Any) -> Any:
    """A matcher's example value (request bodies and headers are sent as plain values)."""
    if hasattr(value, "value") and not isinstance(value, dict | list | str):
        return value.value
    return value


def _config(urls: dict[str, str]) -> GatewayConfig:
    config = load_config()
    upstreams = {
        name: dataclasses.replace(
            up,
            instances=(urls[name],) if name in urls else up.instances,
            health=HealthCheck(up.health.path, 3600.0),  # no probe reaches a mock server
        )
        for name, up in config.upstreams.items()
    }
    return dataclasses.replace(config, upstreams=upstreams)


async def _drive(
    config: GatewayConfig,
    examples: dict[str, list[Example]],
    aggregate: Aggregate | None = None,
) -> list[str]:
    from contracts.tokens import TestIssuer

    issuer = TestIssuer()
    app = create_app(config, verifier=issuer.async_verifier(), transport_kind="http1")
    problems: list[str] = []
    async with TestClient(TestServer(app)) as client:
        for provider, exs in examples.items():
            for ex in exs:
                headers = {k: str(_example_value(v)) for k, v in ex.request_headers.items()}
                if ex.token:
                    headers["Authorization"] = f"Bearer {issuer.token(ALL_SCOPES)}"
                body = ex.request_body
                kwargs: dict[str, Any] = {"params": ex.query, "headers": headers}
                if isinstance(body, dict):
                    kwargs["json"] = body
                elif body is not None:
                    kwargs["data"] = body
                    headers["Content-Type"] = ex.request_type
                async with client.request(ex.method, ex.path, **kwargs) as resp:
                    await resp.read()
                    if resp.status != ex.status:
                        problems.append(
                            f"gateway -> {provider}: {ex.description!r}: the gateway answered "
                            f"{resp.status}, the upstream {ex.status}"
                        )
        if aggregate is not None:
            headers = {"Authorization": f"Bearer {issuer.token(ALL_SCOPES)}"}
            async with client.get(aggregate.path, headers=headers) as resp:
                body = await resp.json(content_type=None)
                partial = resp.headers.get("X-Portico-Partial")
                if resp.status != 200 or partial or body.get("errors"):
                    problems.append(
                        f"gateway: {aggregate.description!r}: the aggregate answered "
                        f"{resp.status} (partial: {partial}, errors: {body.get('errors')})"
                    )
    return problems


def _serve(
    pacts: dict[str, Pact],
    examples: dict[str, list[Example]],
    aggregate: Aggregate | None = None,
) -> None:
    """Serve `pacts` on mock servers and send the examples (or the aggregate) through a real
    gateway routed onto them; ConsumerFailed naming what did not match."""
    with ExitStack() as stack:
        servers = {
            p: stack.enter_context(pact.serve(addr="127.0.0.1", raises=False, verbose=False))
            for p, pact in pacts.items()
        }
        urls = {p: str(s.url).rstrip("/") for p, s in servers.items()}
        problems = asyncio.run(_drive(_config(urls), examples, aggregate))
        for p, server in servers.items():
            if not server.matched:
                for m in server.mismatches:
                    problems.append(f"gateway -> {p}: mock server: {m}")
    if problems:
        raise ConsumerFailed("; ".join(problems))


def run(
    pact_dir: Path,
    examples: dict[str, list[Example]] | None = None,
    aggregates: list[Aggregate] | None = None,
) -> list[Path]:
    """Routes first (one mock server per upstream), then each aggregate on mock servers of its
    own - its parts repeat requests a route example makes - merged into the same pact files."""
    examples = EXAMPLES if examples is None else examples
    aggregates = AGGREGATES if aggregates is None else aggregates
    router = Router(load_config().routes)
    pacts = {p: Pact(CONSUMER, p).with_specification("V4") for p in examples}
    for provider, exs in examples.items():
        for ex in exs:
            _define(pacts[provider], ex, router)
    _serve(pacts, examples)
    written: dict[str, Path] = {}
    for p, pact in pacts.items():
        pact.write_file(pact_dir, overwrite=True)
        written[p] = pact_dir / f"{CONSUMER}-{p}.json"
    for agg in aggregates:
        parts: dict[str, Pact] = {}
        for part in agg.parts:
            _define_part(parts, agg, part, router)
        _serve(parts, {}, agg)
        for p, pact in parts.items():
            pact.write_file(pact_dir, overwrite=p not in written)
            written[p] = pact_dir / f"{CONSUMER}-{p}.json"
    return list(written.values())
