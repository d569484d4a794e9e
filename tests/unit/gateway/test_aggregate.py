"""Aggregated endpoints on fake upstreams: the graph, concurrency, failures and their statuses."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

import pytest

from chassis import ConfigError
from gateway.app import STATE
from gateway.pipeline.aggregate import PARTIAL_HEADER, ExprError, parse_template
from gateway.transport import MockResponse, OutboundRequest
from tests.support.tokens import TestIssuer

from .conftest import BASE, SVC, FakeUpstreams, GatewayClient, make_config, refused

ALL = ["orders:read", "catalog:read", "payments:read", "profile"]

ROUTES = [
    *BASE["routes"],
    *(
        {"name": name, "methods": ["GET"], "path": path, "upstream": "svc", "auth": auth}
        for name, path, auth in [
            ("orders.get", "/orders/{id}", {"scopes": ["orders:read"]}),
            ("products.list", "/products", {"scopes": ["catalog:read"]}),
            ("payments.get", "/payments/{id}", {"scopes": ["payments:read"]}),
            ("me", "/me", {"scopes": ["profile"]}),
            ("a", "/a", {"required": False}),
            ("b", "/b", {"required": False}),
            ("c", "/c/{v}", {"required": False}),
        ]
    ),
]

DETAILS: dict[str, Any] = {
    "name": "orders.details",
    "path": "/orders/{id}/details",
    "parts": [
        {"name": "order", "path": "/orders/{id}", "timeout": 0.5},
        {
            "name": "products",
            "path": "/products?sku={order.items[*].sku}",
            "select": "items[0]",
            "required": False,
        },
        {"name": "payment", "path": "/payments/{order.payment_id}", "required": False},
        {"name": "user", "path": "/me", "required": False},
    ],
}


def details(**changes: Any) -> dict[str, Any]:
    agg = copy.deepcopy(DETAILS)
    agg.update(changes)
    return agg


def order(payment_id: str | None = "pay-1") -> dict[str, Any]:
    return {
        "id": "o-1",
        "items": [{"sku": "A 1"}, {"sku": "B"}, {"sku": "A 1"}],
        "payment_id": payment_id,
    }


def product(request: OutboundRequest) -> MockResponse:
    sku = request.target.partition("sku=")[2]
    return MockResponse(json={"items": [{"sku": sku}], "next_cursor": None})


def serve_details(upstreams: FakeUpstreams, **overrides: Any) -> None:
    handlers = {
        "/orders/o-1": lambda _r: MockResponse(json=order()),
        "/products": product,
        "/payments/pay-1": lambda _r: MockResponse(json={"id": "pay-1", "status": "CAPTURED"}),
        "/me": lambda _r: MockResponse(403, json={"status": 403, "detail": "user-token-required"}),
        **overrides,
    }
    for path, handler in handlers.items():
        upstreams.on(SVC, path, handler)


async def _client(gateway: GatewayClient, *aggregates: dict[str, Any]) -> Any:
    return await gateway(routes=ROUTES, aggregates=list(aggregates or [details()]))


async def test_details_combines_parts_and_marks_partial(
    gateway: GatewayClient, upstreams: FakeUpstreams, issuer: TestIssuer
) -> None:
    serve_details(upstreams)
    client = await _client(gateway)
    auth = issuer.auth(ALL)
    resp = await client.get("/orders/o-1/details", headers=auth)
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["order"]["id"] == "o-1"
    # fan-out: one result per item, in order; the repeated sku is fetched once, encoded
    assert body["products"] == [{"sku": "A%201"}, {"sku": "B"}, {"sku": "A%201"}]
    product_calls = [r.target for r in upstreams.seen() if r.target.startswith("/products")]
    assert sorted(product_calls) == ["/products?sku=A%201", "/products?sku=B"]
    assert body["payment"] == {"id": "pay-1", "status": "CAPTURED"}
    # identity's 403 for a client token: null, listed with the upstream's own status
    assert body["user"] is None
    assert body["errors"] == [
        {
            "part": "user",
            "status": 403,
            "title": "Forbidden",
            "detail": "user-token-required",
            "upstream": "svc",
        }
    ]
    assert resp.headers[PARTIAL_HEADER] == "true"
    # the caller's token and the request id go to every part
    for request in upstreams.seen():
        assert request.headers["Authorization"] == auth["Authorization"]
        assert request.headers["X-Request-ID"] == resp.headers["X-Request-ID"]


async def test_complete_answer_has_no_partial_marker(
    gateway: GatewayClient, upstreams: FakeUpstreams, issuer: TestIssuer
) -> None:
    serve_details(upstreams, **{"/me": lambda _r: MockResponse(json={"id": "u-1"})})
    client = await _client(gateway)
    resp = await client.get("/orders/o-1/details", headers=issuer.auth(ALL))
    body = await resp.json()
    assert body["user"] == {"id": "u-1"}
    assert body["errors"] == []
    assert PARTIAL_HEADER not in resp.headers


async def test_independent_parts_are_called_concurrently(
    gateway: GatewayClient, upstreams: FakeUpstreams, issuer: TestIssuer
) -> None:
    """Each fake part waits (bounded) until both were called: only concurrency passes."""
    barrier = asyncio.Barrier(2)
    calls: list[str] = []

    def meeting(name: str) -> Any:
        async def handler(_request: OutboundRequest) -> MockResponse:
            calls.append(name)
            try:
                async with asyncio.timeout(2):
                    await barrier.wait()
            except TimeoutError:
                return MockResponse(500, json={"detail": f"{name} was called alone"})
            return MockResponse(json={"name": name, "next": name.upper()})

        return handler

    upstreams.on(SVC, "/a", meeting("a"))
    upstreams.on(SVC, "/b", meeting("b"))
    upstreams.on(SVC, "/c/A", lambda r: MockResponse(json={"after": calls[:]}))
    agg = {
        "name": "pair",
        "path": "/pair",
        "parts": [
            {"name": "a", "path": "/a"},
            {"name": "b", "path": "/b"},
            {"name": "c", "path": "/c/{a.next}"},  # depends on a: starts after it
        ],
    }
    client = await _client(gateway, agg)
    resp = await client.get("/pair", headers=issuer.auth())
    assert resp.status == 200, await resp.text()
    body = await resp.json()
    assert body["a"]["name"] == "a" and body["b"]["name"] == "b"
    assert sorted(body["c"]["after"]) == ["a", "b"]


@pytest.mark.parametrize(
    ("handler", "status", "upstream_status"),
    [
        (lambda _r: MockResponse(500, json={"detail": "boom"}), 502, 500),
        (refused, 502, None),
        (lambda _r: MockResponse(404, json={"detail": "no order with id o-1"}), 404, 404),
        (lambda _r: MockResponse(200, body=b"<html>"), 502, None),
    ],
)
async def test_required_part_failure_fails_the_whole(
    gateway: GatewayClient,
    upstreams: FakeUpstreams,
    issuer: TestIssuer,
    handler: Any,
    status: int,
    upstream_status: int | None,
) -> None:
    serve_details(upstreams, **{"/orders/o-1": handler})
    client = await _client(gateway)
    resp = await client.get("/orders/o-1/details", headers=issuer.auth(ALL))
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/problem+json"
    doc = await resp.json()
    assert doc["part"] == "order"
    assert "'order'" in doc["detail"]
    assert doc.get("upstream_status") == upstream_status
    assert doc["errors"][0]["status"] == (upstream_status or status)


async def test_required_part_timeout_is_504(
    gateway: GatewayClient, upstreams: FakeUpstreams, issuer: TestIssuer
) -> None:
    async def stall(_request: OutboundRequest) -> MockResponse:
        await asyncio.Event().wait()  # never answers; the part's 0.5 s timeout ends it
        raise AssertionError

    serve_details(upstreams, **{"/orders/o-1": stall})
    client = await _client(gateway)
    resp = await client.get("/orders/o-1/details", headers=issuer.auth(ALL))
    assert resp.status == 504
    assert (await resp.json())["part"] == "order"


async def test_no_healthy_instance_is_503(
    gateway: GatewayClient, upstreams: FakeUpstreams, issuer: TestIssuer
) -> None:
    client = await _client(gateway)
    for instance in client.app[STATE].state.upstreams["svc"].instances:
        instance.healthy = False
    resp = await client.get("/orders/o-1/details", headers=issuer.auth(ALL))
    assert resp.status == 503
    assert "Retry-After" in resp.headers


async def test_optional_failure_keeps_the_upstream_status(
    gateway: GatewayClient, upstreams: FakeUpstreams, issuer: TestIssuer
) -> None:
    serve_details(
        upstreams, **{"/payments/pay-1": lambda _r: MockResponse(500, json={"title": "oops"})}
    )
    client = await _client(gateway)
    resp = await client.get("/orders/o-1/details", headers=issuer.auth(ALL))
    assert resp.status == 200
    body = await resp.json()
    assert body["payment"] is None
    by_part = {e["part"]: e for e in body["errors"]}
    assert by_part["payment"]["status"] == 500  # never replaced by the gateway's own code
    assert by_part["payment"]["detail"] == "oops"
    assert resp.headers[PARTIAL_HEADER] == "true"


async def test_all_or_nothing_fails_on_an_optional_part(
    gateway: GatewayClient, upstreams: FakeUpstreams, issuer: TestIssuer
) -> None:
    serve_details(upstreams, **{"/payments/pay-1": refused})
    client = await _client(gateway, details(mode="all_or_nothing"))
    resp = await client.get("/orders/o-1/details", headers=issuer.auth(ALL))
    assert resp.status in (403, 502)  # whichever failed part comes first: user or payment
    doc = await resp.json()
    assert doc["part"] in ("user", "payment")
    serve_details(
        upstreams,
        **{"/payments/pay-1": refused, "/me": lambda _r: MockResponse(json={"id": "u"})},
    )
    resp = await client.get("/orders/o-1/details", headers=issuer.auth(ALL))
    assert resp.status == 502
    assert (await resp.json())["part"] == "payment"


async def test_each_part_is_checked_against_its_routes_scopes(
    gateway: GatewayClient, upstreams: FakeUpstreams, issuer: TestIssuer
) -> None:
    serve_details(upstreams)
    client = await _client(gateway)
    resp = await client.get("/orders/o-1/details", headers=issuer.auth(["orders:read"]))
    assert resp.status == 200
    body = await resp.json()
    assert body["products"] is None and body["payment"] is None
    statuses = {e["part"]: e["status"] for e in body["errors"]}
    assert statuses == {"products": 403, "payment": 403, "user": 403}
    # refused at the gateway: catalog and payments never saw the request
    assert not [r for r in upstreams.seen() if r.target.startswith(("/products", "/payments"))]


async def test_null_input_means_a_null_part_not_an_error(
    gateway: GatewayClient, upstreams: FakeUpstreams, issuer: TestIssuer
) -> None:
    serve_details(
        upstreams,
        **{
            "/orders/o-1": lambda _r: MockResponse(json=order(payment_id=None)),
            "/me": lambda _r: MockResponse(json={"id": "u"}),
        },
    )
    client = await _client(gateway)
    resp = await client.get("/orders/o-1/details", headers=issuer.auth(ALL))
    body = await resp.json()
    assert body["payment"] is None
    assert body["errors"] == []


async def test_parts_of_a_failed_optional_part_are_424(
    gateway: GatewayClient, upstreams: FakeUpstreams, issuer: TestIssuer
) -> None:
    serve_details(upstreams, **{"/orders/o-1": refused})
    agg = details()
    agg["parts"][0]["required"] = False
    client = await _client(gateway, agg)
    resp = await client.get("/orders/o-1/details", headers=issuer.auth(ALL))
    assert resp.status == 200
    statuses = {e["part"]: e["status"] for e in (await resp.json())["errors"]}
    assert statuses == {"order": 502, "products": 424, "payment": 424, "user": 403}


async def test_the_aggregate_needs_a_token(gateway: GatewayClient) -> None:
    client = await _client(gateway)
    resp = await client.get("/orders/o-1/details")
    assert resp.status == 401
    assert "WWW-Authenticate" in resp.headers


def test_template_syntax() -> None:
    t = parse_template("/p?sku={order.items[*].sku}&n={order.items[*].qty}&x={id}")
    assert t.roots == {"order", "id"}
    assert t.fanout == ("order", "items")
    for bad in ["/p/{order.items[*].x[*]}", "/p/{1x}", "/p/{a}}", "/p/{a.items[*]}/{a.o[*]}"]:
        with pytest.raises(ExprError):
            parse_template(bad)


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        ([{"name": "a", "path": "/c/{later.x}"}, {"name": "later", "path": "/a"}], "parts[0].path"),
        ([{"name": "a", "path": "/nowhere"}], "no GET route matches"),
        ([{"name": "a", "path": "/a"}, {"name": "a", "path": "/b"}], "duplicate part name"),
        ([{"name": "errors", "path": "/a"}], "parts[0].name: is reserved"),
        ([{"name": "a", "path": "/a", "method": "POST"}], "only GET parts"),
        ([{"name": "a", "path": "/a", "select": "x[*]"}], "parts[0].select"),
    ],
)
def test_config_errors_name_the_key(parts: list[dict[str, Any]], message: str) -> None:
    agg = {"name": "x", "path": "/x/{id}", "parts": parts}
    with pytest.raises(ConfigError) as info:
        make_config(routes=ROUTES, aggregates=[agg])
    assert "aggregates[0]." in str(info.value)
    assert message in str(info.value)


def test_aggregate_path_cannot_shadow_a_route() -> None:
    with pytest.raises(ConfigError, match=r"aggregates\[0\].path: GET /a is already routed"):
        make_config(routes=ROUTES, aggregates=[details(path="/a", parts=[DETAILS["parts"][3]])])


def test_the_packaged_config_declares_both_aggregates() -> None:
    from gateway.config import load_config

    config = load_config(environ={})
    paths = {a.path for a in config.aggregates}
    assert paths == {"/api/v1/orders/{id}/details", "/api/v1/me/dashboard"}
