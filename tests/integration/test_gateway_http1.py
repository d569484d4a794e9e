"""The gateway's pooled HTTP/1.1 client over real sockets, next to aiohttp's client.

The same upstream (a real aiohttp app on a free port) is reached through both transports, so
the fast client is held to the behaviour of the reference one; then what only the fast client
has: a bounded pool wait that becomes a 503 problem, and the GATEWAY_TRANSPORT switch.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from chassis import ConfigError
from gateway.app import TRANSPORT, create_app
from gateway.config import GatewayConfig, parse_config
from gateway.http1 import Http1Transport
from gateway.transport import AiohttpTransport, Transport
from tests.support.tokens import TestIssuer
from tests.support.waiting import wait_until_async

DEADLINE = 5.0


class Service:
    def __init__(self) -> None:
        self.issuer = TestIssuer()
        self.peers: list[tuple[str, int]] = []
        self.release = asyncio.Event()
        self.app = web.Application()
        r = self.app.router
        r.add_get("/.well-known/jwks.json", self.jwks)
        r.add_get("/health/ready", self.ok)
        r.add_route("*", "/p/echo", self.echo)
        r.add_get("/p/empty", self.empty)
        r.add_get("/p/cached", self.cached)
        r.add_get("/p/chunked", self.chunked)
        r.add_get("/p/held", self.held)
        r.add_get("/p/close", self.close)

    def _peer(self, request: web.Request) -> None:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.peers.append(tuple(peer[:2]) if peer else ("?", 0))

    async def jwks(self, _request: web.Request) -> web.Response:
        return web.json_response(self.issuer.jwks())

    async def ok(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def echo(self, request: web.Request) -> web.Response:
        self._peer(request)
        body = await request.read()
        return web.json_response(
            {
                "method": request.method,
                "size": len(body),
                "sha256": hashlib.sha256(body).hexdigest(),
                "chunked": request.headers.get("Transfer-Encoding") == "chunked",
            },
            headers={"X-Echo": "1"},
        )

    async def empty(self, request: web.Request) -> web.Response:
        self._peer(request)
        return web.Response(status=204)

    async def cached(self, request: web.Request) -> web.Response:
        self._peer(request)
        return web.Response(status=304, headers={"ETag": '"v1"'})

    async def chunked(self, request: web.Request) -> web.StreamResponse:
        self._peer(request)
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        for part in (b"one,", b"two,", b"three"):
            await resp.write(part)
        await resp.write_eof()
        return resp

    async def held(self, _request: web.Request) -> web.Response:
        async with asyncio.timeout(DEADLINE):
            await self.release.wait()
        return web.json_response({"held": True})

    async def close(self, request: web.Request) -> web.Response:
        self._peer(request)
        return web.Response(text="bye", headers={"Connection": "close"})


def _config(url: str, issuer: TestIssuer) -> GatewayConfig:
    return parse_config(
        {
            "auth": {
                "issuer": issuer.issuer,
                "audience": issuer.audience,
                "jwks_url": f"{url}/.well-known/jwks.json",
            },
            "upstreams": {"svc": {"instances": [url], "pool_size": 1, "health": {"interval": 60}}},
            "routes": [
                {
                    "name": "public",
                    "methods": ["GET", "POST", "PUT"],
                    "path": "/p/*",
                    "upstream": "svc",
                    "auth": {"required": False},
                }
            ],
        },
        environ={},
    )


@pytest.fixture
async def service(aiohttp_server: Any) -> AsyncIterator[tuple[Service, str]]:
    svc = Service()
    server: TestServer = await aiohttp_server(svc.app, host="127.0.0.1")
    yield svc, str(server.make_url("")).rstrip("/")
    svc.release.set()


@pytest.fixture(params=["http1", "aiohttp"])
async def gateway(
    request: pytest.FixtureRequest, aiohttp_client: Any, service: tuple[Service, str]
) -> TestClient:
    svc, url = service
    app = create_app(_config(url, svc.issuer), transport_kind=request.param)
    client: TestClient = await aiohttp_client(app)
    return client


async def test_bodies_both_ways_on_one_kept_alive_connection(
    gateway: TestClient, service: tuple[Service, str]
) -> None:
    svc, _ = service
    payload = bytes(range(256)) * 4096  # 1 MiB: streamed, with its length

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"x" * 70000

    for data, chunked, size in ((payload, False, len(payload)), (chunks(), True, 280000)):
        resp = await gateway.put("/p/echo", data=data)
        assert resp.status == 200
        doc = await resp.json()
        assert (doc["size"], doc["chunked"]) == (size, chunked)
    assert (await gateway.post("/p/echo", data=b"")).status == 200
    resp = await gateway.get("/p/chunked")
    assert await resp.read() == b"one,two,three"
    assert len(set(svc.peers)) == 1  # one upstream connection served everything


async def test_head_204_304_pass_through_without_bodies(
    gateway: TestClient, service: tuple[Service, str]
) -> None:
    svc, _ = service
    resp = await gateway.head("/p/echo")
    assert resp.status == 200 and resp.headers["X-Echo"] == "1"
    assert await resp.read() == b""
    assert (await gateway.get("/p/empty")).status == 204
    resp = await gateway.get("/p/cached")
    assert (resp.status, resp.headers["ETag"]) == (304, '"v1"')
    resp = await gateway.get("/p/echo")
    assert (await resp.json())["method"] == "GET"
    assert len(set(svc.peers)) == 1


async def test_upstream_connection_close_is_honoured(
    gateway: TestClient, service: tuple[Service, str]
) -> None:
    svc, _ = service
    for _ in range(2):
        resp = await gateway.get("/p/close")
        assert await resp.text() == "bye"
        assert "Connection" not in resp.headers or resp.headers["Connection"] != "close"
    assert len(set(svc.peers)) == 2


async def test_saturated_pool_is_a_503_problem(
    aiohttp_client: Any, service: tuple[Service, str]
) -> None:
    svc, url = service
    transport = Http1Transport({"svc": 1}, pool_timeout=0.1)
    client: TestClient = await aiohttp_client(
        create_app(_config(url, svc.issuer), transport=transport)
    )
    held = asyncio.create_task(client.get("/p/held"))
    await wait_until_async(
        lambda: transport._pools and transport._pools[("svc", url)].count,
        DEADLINE,
        "the held request to take the pool's one connection",
        interval=0.01,
    )
    resp = await client.get("/p/echo")
    assert resp.status == 503
    assert resp.content_type == "application/problem+json"
    assert resp.headers["Retry-After"] == "1"
    svc.release.set()
    assert (await held).status == 200
    assert (await client.get("/p/echo")).status == 200
    await transport.close()


@pytest.mark.parametrize(
    ("env", "kind"), [({}, Http1Transport), ({"GATEWAY_TRANSPORT": "aiohttp"}, AiohttpTransport)]
)
async def test_gateway_transport_env_picks_the_client(
    monkeypatch: pytest.MonkeyPatch,
    service: tuple[Service, str],
    env: dict[str, str],
    kind: type[Transport],
) -> None:
    svc, url = service
    monkeypatch.delenv("GATEWAY_TRANSPORT", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    app = create_app(_config(url, svc.issuer))
    assert isinstance(app[TRANSPORT], kind)
    monkeypatch.setenv("GATEWAY_TRANSPORT", "curl")
    with pytest.raises(ConfigError, match="GATEWAY_TRANSPORT"):
        create_app(_config(url, svc.issuer))
