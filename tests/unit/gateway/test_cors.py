"""CORS: preflights answered at the gateway, headers on allowed origins only, Vary: Origin."""

from __future__ import annotations

from typing import Any

import pytest

from chassis import ConfigError
from gateway.transport import MockResponse

from .conftest import BASE, SVC, FakeUpstreams, GatewayClient, make_config

SHOP = "https://shop.example.com"
POLICIES = {
    "web": {
        "allow_origins": [SHOP],
        "allow_headers": ["Authorization", "Content-Type"],
        "expose_headers": ["X-Request-ID"],
        "allow_credentials": True,
        "max_age": 600,
    },
    "open": {"allow_origins": ["*"], "allow_methods": ["GET"]},
}


def routes(**cors: str) -> list[dict[str, Any]]:
    out = []
    for route in BASE["routes"]:
        route = dict(route)
        if route["name"] in cors:
            route["cors"] = cors[route["name"]]
        out.append(route)
    return out


async def _client(gateway: GatewayClient, **extra: Any) -> Any:
    return await gateway(
        cors=POLICIES, routes=routes(**{"items.list": "web", "public": "open"}), **extra
    )


def preflight(origin: str = SHOP, method: str = "GET", headers: str = "authorization") -> Any:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": headers,
    }


async def test_preflight_is_answered_without_the_service(
    gateway: GatewayClient, upstreams: FakeUpstreams
) -> None:
    client = await _client(gateway)
    resp = await client.options("/items", headers=preflight())
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == SHOP
    assert resp.headers["Access-Control-Allow-Methods"] == "GET"  # the route's own methods
    assert resp.headers["Access-Control-Allow-Headers"] == "Authorization, Content-Type"
    assert resp.headers["Access-Control-Allow-Credentials"] == "true"
    assert resp.headers["Access-Control-Max-Age"] == "600"
    assert "Origin" in resp.headers["Vary"]
    assert upstreams.seen() == []


@pytest.mark.parametrize(
    ("path", "headers"),
    [
        ("/items", preflight(origin="https://evil.example")),
        ("/items", preflight(headers="x-secret")),
        ("/public/x", preflight(origin="https://any.example", method="POST")),  # GET only
    ],
)
async def test_refused_preflight_has_no_cors_headers(
    gateway: GatewayClient, upstreams: FakeUpstreams, path: str, headers: dict[str, str]
) -> None:
    client = await _client(gateway)
    resp = await client.options(path, headers=headers)
    assert resp.status == 403
    assert resp.content_type == "application/problem+json"
    assert not [h for h in resp.headers if h.lower().startswith("access-control-")]
    assert upstreams.seen() == []


async def test_preflight_for_a_route_without_policy_goes_to_the_proxy(
    gateway: GatewayClient,
) -> None:
    client = await _client(gateway)
    resp = await client.options("/items", headers=preflight(method="POST"))  # items.create
    assert resp.status == 405  # the proxy's answer: OPTIONS is not routed there
    assert not [h for h in resp.headers if h.lower().startswith("access-control-")]


async def test_allowed_origin_gets_cors_headers_and_vary(
    gateway: GatewayClient, issuer: Any
) -> None:
    client = await _client(gateway)
    auth = issuer.auth(["items:read"])
    resp = await client.get("/items", headers={**auth, "Origin": SHOP})
    assert resp.status == 200
    assert resp.headers["Access-Control-Allow-Origin"] == SHOP
    assert resp.headers["Access-Control-Allow-Credentials"] == "true"
    assert resp.headers["Access-Control-Expose-Headers"] == "X-Request-ID"
    assert resp.headers["Vary"] == "Origin"
    # errors too, so that the browser can read them
    resp = await client.get("/items", headers={"Origin": SHOP})
    assert resp.status == 401
    assert resp.headers["Access-Control-Allow-Origin"] == SHOP


async def test_disallowed_origin_gets_no_cors_headers(gateway: GatewayClient, issuer: Any) -> None:
    client = await _client(gateway)
    headers = {**issuer.auth(["items:read"]), "Origin": "https://evil.example"}
    resp = await client.get("/items", headers=headers)
    assert resp.status == 200
    assert not [h for h in resp.headers if h.lower().startswith("access-control-")]
    assert resp.headers["Vary"] == "Origin"


async def test_wildcard_policy_answers_star(gateway: GatewayClient) -> None:
    client = await _client(gateway)
    resp = await client.get("/public/x", headers={"Origin": "https://any.example"})
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    assert "Vary" not in resp.headers
    resp = await client.options("/public/x", headers=preflight(origin="https://any.example"))
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Origin"] == "*"


async def test_routes_without_a_policy_are_untouched(
    gateway: GatewayClient, upstreams: FakeUpstreams
) -> None:
    upstreams.on(SVC, "/old/1", lambda _r: MockResponse(json={"ok": True}))
    client = await _client(gateway)
    resp = await client.get("/old/1", headers={"Origin": SHOP})
    assert not [h for h in resp.headers if h.lower().startswith("access-control-")]
    assert "Vary" not in resp.headers


async def test_no_policy_installs_no_cors_stage(gateway: GatewayClient) -> None:
    client = await gateway()
    methods = {route.method for route in client.app.router.routes()}
    assert "OPTIONS" not in methods
    assert len(client.app.on_response_prepare) == len(
        (await gateway(cors=POLICIES)).app.on_response_prepare
    )


async def test_aggregate_preflight(gateway: GatewayClient) -> None:
    agg = {
        "name": "agg",
        "path": "/things/{id}/all",
        "cors": "web",
        "parts": [{"name": "item", "path": "/items/{id}"}],
    }
    client = await gateway(cors=POLICIES, aggregates=[agg])
    resp = await client.options("/things/1/all", headers=preflight())
    assert resp.status == 204
    assert resp.headers["Access-Control-Allow-Methods"] == "GET, HEAD"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"cors": {"x": {"allow_origins": ["*"], "allow_credentials": True}}},
            "cors.x.allow_origins",
        ),
        ({"cors": {"x": {"allow_origins": ["shop.example"]}}}, "must be '*' or an origin"),
        ({"routes": routes(**{"items.list": "nope"})}, "routes[1].cors: unknown CORS policy"),
    ],
)
def test_config_errors(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        make_config(**changes)
    assert message in str(info.value)
