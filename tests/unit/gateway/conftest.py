"""Gateway unit-test fixtures: a small config, a token issuer, and fake upstreams.

Upstreams are faked with `MockTransport`: `upstream` is a tiny router from (origin, path) to
handler functions, with the JWKS of `issuer` served at the identity origin and requests
recorded for assertions.
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient

from gateway.app import create_app
from gateway.config import GatewayConfig, parse_config
from gateway.transport import MockResponse, MockTransport, OutboundRequest, UpstreamUnavailable
from tests.support.tokens import TestIssuer

ISSUER = "https://issuer.test"
IDENTITY = "http://identity.test"
SVC = "http://svc.test"
JWKS_PATH = "/.well-known/jwks.json"

BASE: dict[str, Any] = {
    "server": {"max_body_bytes": 1000},
    "auth": {
        "issuer": ISSUER,
        "audience": "portico-api",
        "jwks_url": IDENTITY + JWKS_PATH,
        "jwks_refetch_interval": 60,
    },
    "upstreams": {
        "identity": {"instances": [IDENTITY], "health": {"interval": 60}},
        "svc": {"instances": [SVC], "timeout": 5, "health": {"interval": 60}},
    },
    "routes": [
        {
            "name": "public",
            "methods": ["GET", "POST"],
            "path": "/public/*",
            "upstream": "svc",
            "auth": {"required": False},
        },
        {
            "name": "items.list",
            "methods": ["GET"],
            "path": "/items",
            "upstream": "svc",
            "auth": {"scopes": ["items:read"]},
        },
        {
            "name": "items.create",
            "methods": ["POST"],
            "path": "/items",
            "upstream": "svc",
            "auth": {"scopes": ["items:write"]},
        },
        {
            "name": "items.get",
            "methods": ["GET"],
            "path": "/items/{id}",
            "upstream": "svc",
            "auth": {"scopes": ["items:read"]},
        },
        {
            "name": "slow",
            "methods": ["GET"],
            "path": "/slow",
            "upstream": "svc",
            "timeout": 0.2,
            "auth": {"required": False},
        },
        {
            "name": "upload",
            "methods": ["POST"],
            "path": "/upload",
            "upstream": "svc",
            "max_body_bytes": 100,
            "auth": {"required": False},
        },
        {
            "name": "renamed",
            "methods": ["GET"],
            "path": "/old/{id}",
            "rewrite": "/v2/things/{id}",
            "upstream": "svc",
            "auth": {"required": False},
        },
    ],
}


def make_config(**changes: Any) -> GatewayConfig:
    raw = copy.deepcopy(BASE)
    raw.update(changes)
    return parse_config(raw, environ={})


Handler = Callable[[OutboundRequest], MockResponse | Awaitable[MockResponse]]


class FakeUpstreams:
    """Routes mock requests by (origin, path); the default answer echoes the request."""

    def __init__(self, issuer: TestIssuer) -> None:
        self.issuer = issuer
        self.handlers: dict[tuple[str, str], Handler] = {}
        self.jwks_fetches = 0
        self.transport = MockTransport(self.dispatch)

    def on(self, origin: str, path: str, handler: Handler) -> None:
        self.handlers[(origin, path)] = handler

    def seen(self, origin: str = SVC) -> list[OutboundRequest]:
        return [r for r in self.transport.requests if r.origin == origin]

    async def dispatch(self, request: OutboundRequest) -> MockResponse:
        path = request.target.partition("?")[0]
        if (request.origin, path) == (IDENTITY, JWKS_PATH):
            self.jwks_fetches += 1
            return MockResponse(json=self.issuer.jwks())
        handler = self.handlers.get((request.origin, path))
        if handler is None:
            return MockResponse(
                json={
                    "method": request.method,
                    "target": request.target,
                    "headers": {str(k): v for k, v in request.headers.items()},
                }
            )
        result = handler(request)
        if not isinstance(result, MockResponse):
            result = await result
        return result


@pytest.fixture(scope="session")
def issuer() -> TestIssuer:
    return TestIssuer(issuer=ISSUER)


@pytest.fixture
def upstreams(issuer: TestIssuer) -> FakeUpstreams:
    return FakeUpstreams(issuer)


GatewayClient = Callable[..., Awaitable[TestClient]]


@pytest.fixture
def gateway(aiohttp_client: Any, upstreams: FakeUpstreams) -> GatewayClient:
    """`await gateway(**config_changes)` -> a test client for a gateway on the fake upstreams."""

    async def make(**changes: Any) -> TestClient:
        app = create_app(make_config(**changes), transport=upstreams.transport)
        client: TestClient = await aiohttp_client(app)
        return client

    return make


def refused(_request: OutboundRequest) -> MockResponse:
    raise UpstreamUnavailable("connection refused")
