"""Header transforms over real sockets, on both servers: a real aiohttp upstream sees the
request fields the route's transforms made, and the client sees the response fields - on an
answer read whole and on one streamed."""

from __future__ import annotations

from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.config import parse_config
from tests.integration.test_gateway_proxy import Upstream, upstream  # noqa: F401 - fixture
from tests.support.front import FrontTestServer
from tests.support.tokens import TestIssuer


def _config(url: str, issuer: TestIssuer) -> Any:
    transforms = {
        "use": "transforms",
        "settings": {
            "request": {
                "remove": ["X-Debug"],
                "rename": {"X-Client-Trace": "X-Trace"},
                "set": {"X-User-Id": "{claims.sub}", "X-Via": "portico {request_id}"},
            },
            "response": {
                "set": {"X-Served-For": "{claims.client_id}"},
                "add": {"Cache-Control": "no-store"},
            },
        },
    }
    everywhere = {
        "use": "transforms",
        "settings": {"response": {"add": {"X-Gateway": "portico"}}},
    }
    return parse_config(
        {
            "auth": {
                "issuer": issuer.issuer,
                "audience": issuer.audience,
                "jwks_url": f"{url}/.well-known/jwks.json",
            },
            "upstreams": {
                "svc": {"instances": [url], "timeout": 5, "health": {"interval": 60}},
            },
            "policies": [everywhere],
            "routes": [
                {
                    "name": "public",
                    "methods": ["GET"],
                    "path": "/public/*",
                    "upstream": "svc",
                    "auth": {"required": False},
                },
                {
                    "name": "private",
                    "methods": ["GET"],
                    "path": "/private",
                    "upstream": "svc",
                    "auth": {"scopes": ["things:read"]},
                    "policies": [transforms],
                },
            ],
        },
        environ={},
    )


@pytest.fixture(params=["front", "aiohttp"])
async def client(
    request: pytest.FixtureRequest,
    aiohttp_client: Any,
    upstream: tuple[Upstream, TestServer],  # noqa: F811 - the imported fixture
) -> TestClient:
    service, server = upstream
    url = str(server.make_url("")).rstrip("/")
    app = create_app(_config(url, service.issuer))
    gateway: TestClient = await aiohttp_client(
        FrontTestServer(app) if request.param == "front" else app
    )
    return gateway


async def test_request_and_response_fields_transformed_on_a_real_upstream(
    client: TestClient,
    upstream: tuple[Upstream, TestServer],  # noqa: F811 - the imported fixture
) -> None:
    service = upstream[0]
    headers = {
        **service.issuer.auth(["things:read"], sub="alice"),
        "X-Request-Id": "tr-1",
        "X-User-Id": "admin",  # spoofed: replaced by the token's subject
        "X-Debug": "1",
        "X-Client-Trace": "abc",
    }
    for _ in range(2):  # the token verified in a task, then from the cache (inline)
        resp = await client.get("/private", headers=headers)
        assert resp.status == 200 and await resp.json() == {"ok": True}
        assert resp.headers["X-Served-For"] == "alice"
        assert resp.headers["Cache-Control"] == "no-store"
        assert resp.headers["X-Gateway"] == "portico"  # the global transform too
        assert resp.headers["X-Request-Id"] == "tr-1"
        seen = service.seen[-1]["headers"]
        assert seen["X-User-Id"] == "alice" and seen["X-Via"] == "portico tr-1"
        assert seen["X-Trace"] == "abc" and "X-Client-Trace" not in seen
        assert "X-Debug" not in seen
        assert "Authorization" in seen  # forwarded: a transform may only remove it


async def test_response_transforms_on_a_streamed_answer(client: TestClient) -> None:
    resp = await client.get("/public/big")  # 2 MiB: relayed while it streams
    assert resp.status == 200
    assert len(await resp.read()) == 2 * 1024 * 1024
    assert resp.headers["X-Gateway"] == "portico"
