"""The gateway over real sockets: a real aiohttp upstream on a free loopback port.

Checks what a mock cannot: bodies really stream both ways (each side sees the first chunk
before the other side sends the next), keep-alive connections are reused, and timeouts and
refused connections come from the real client.
"""

from __future__ import annotations

import asyncio
import hashlib
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import ClientPayloadError, web
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.config import parse_config
from tests.support.front import FrontTestServer
from tests.support.tokens import TestIssuer

DEADLINE = 5.0


class Upstream:
    """A small service that records what it receives and can hold its answers back."""

    def __init__(self, issuer: TestIssuer) -> None:
        self.issuer = issuer
        self.first_chunk_in = asyncio.Event()
        self.release = asyncio.Event()
        self.peers: list[tuple[str, int]] = []
        self.seen: list[dict[str, Any]] = []
        self.app = web.Application()
        r = self.app.router
        r.add_get("/.well-known/jwks.json", self.jwks)
        r.add_get("/health/ready", self.ready)
        r.add_post("/public/upload", self.upload)
        r.add_get("/public/stream", self.stream)
        r.add_get("/public/big", self.big)
        r.add_post("/public/create", self.create)
        r.add_get("/public/moved", self.moved)
        r.add_get("/public/peer", self.peer)
        r.add_get("/public/problem", self.problem)
        r.add_get("/private", self.private)
        r.add_get("/slow", self.slow)
        r.add_get("/public/cut/{how}", self.cut)

    async def ready(self, _request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def jwks(self, _request: web.Request) -> web.Response:
        return web.json_response(self.issuer.jwks())

    def _record(self, request: web.Request) -> None:
        self.seen.append({"path": request.path_qs, "headers": dict(request.headers)})

    async def upload(self, request: web.Request) -> web.StreamResponse:
        self._record(request)
        digest = hashlib.sha256()
        size = 0
        async for chunk in request.content.iter_any():
            if size == 0:
                self.first_chunk_in.set()
            size += len(chunk)
            digest.update(chunk)
        return web.json_response(
            {
                "size": size,
                "sha256": digest.hexdigest(),
                "chunked": request.headers.get("Transfer-Encoding") == "chunked",
                "content_length": request.content_length,
            }
        )

    async def stream(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()
        await resp.prepare(request)
        await resp.write(b"first;")
        async with asyncio.timeout(DEADLINE):
            await self.release.wait()
        await resp.write(b"second")
        await resp.write_eof()
        return resp

    async def big(self, _request: web.Request) -> web.Response:
        return web.Response(body=bytes(range(256)) * 8192)  # 2 MiB with a Content-Length

    async def create(self, _request: web.Request) -> web.Response:
        return web.json_response({"id": 42}, status=201, headers={"Location": "/public/things/42"})

    async def moved(self, _request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": "https://elsewhere.test/x"})

    async def peer(self, request: web.Request) -> web.Response:
        self._record(request)
        peername = request.transport.get_extra_info("peername") if request.transport else None
        self.peers.append(tuple(peername[:2]) if peername else ("?", 0))
        return web.json_response({"ok": True})

    async def problem(self, _request: web.Request) -> web.Response:
        return web.json_response(
            {"type": "about:blank", "title": "Not Found", "status": 404},
            status=404,
            content_type="application/problem+json",
        )

    async def private(self, request: web.Request) -> web.Response:
        self._record(request)
        return web.json_response({"ok": True})

    async def cut(self, request: web.Request) -> web.StreamResponse:
        """Promise a body, send part of it, then drop the connection."""
        resp = web.StreamResponse()
        if request.match_info["how"] == "chunked":
            resp.enable_chunked_encoding()
        else:
            resp.content_length = 1000
        await resp.prepare(request)
        await resp.write(b"partial")
        await asyncio.sleep(0.05)
        assert request.transport is not None
        request.transport.close()
        return resp

    async def slow(self, _request: web.Request) -> web.Response:
        await asyncio.sleep(DEADLINE)
        return web.Response(text="too late")


def _free_closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def _config(upstream_url: str, issuer: TestIssuer) -> Any:
    public = {"auth": {"required": False}}
    return parse_config(
        {
            "server": {"max_body_bytes": 8 * 1024 * 1024},
            "auth": {
                "issuer": issuer.issuer,
                "audience": issuer.audience,
                "jwks_url": f"{upstream_url}/.well-known/jwks.json",
            },
            "upstreams": {
                "svc": {"instances": [upstream_url], "timeout": 5, "health": {"interval": 60}},
                "down": {
                    "instances": [f"http://127.0.0.1:{_free_closed_port()}"],
                    "health": {"interval": 60},
                },
            },
            "routes": [
                {
                    "name": "public",
                    "methods": ["GET", "POST"],
                    "path": "/public/*",
                    "upstream": "svc",
                    **public,
                },
                {
                    "name": "slow",
                    "methods": ["GET"],
                    "path": "/slow",
                    "upstream": "svc",
                    "timeout": 0.3,
                    **public,
                },
                {
                    "name": "down",
                    "methods": ["GET"],
                    "path": "/down/*",
                    "upstream": "down",
                    **public,
                },
                {
                    "name": "private",
                    "methods": ["GET"],
                    "path": "/private",
                    "upstream": "svc",
                    "auth": {"scopes": ["things:read"]},
                },
            ],
        },
        environ={},
    )


@pytest.fixture
async def upstream(aiohttp_server: Any) -> tuple[Upstream, TestServer]:
    service = Upstream(TestIssuer())
    server: TestServer = await aiohttp_server(service.app, host="127.0.0.1")
    return service, server


@pytest.fixture(params=["front", "aiohttp"])
async def client(
    request: pytest.FixtureRequest, aiohttp_client: Any, upstream: tuple[Upstream, TestServer]
) -> TestClient:
    """The gateway behind each of its servers: the front server and aiohttp's alone."""
    service, server = upstream
    url = str(server.make_url("")).rstrip("/")
    app = create_app(_config(url, service.issuer))
    gateway: TestClient = await aiohttp_client(
        FrontTestServer(app) if request.param == "front" else app
    )
    return gateway


@pytest.fixture
def service(upstream: tuple[Upstream, TestServer]) -> Upstream:
    return upstream[0]


async def test_chunked_request_body_streams_to_the_upstream(
    client: TestClient, service: Upstream
) -> None:
    chunk = b"z" * 65536

    async def body() -> AsyncIterator[bytes]:
        yield chunk
        # the upstream must see the first chunk before the client sends any more
        async with asyncio.timeout(DEADLINE):
            await service.first_chunk_in.wait()
        for _ in range(15):
            yield chunk

    resp = await client.post("/public/upload", data=body())
    assert resp.status == 200
    result = await resp.json()
    assert result["size"] == 16 * len(chunk)
    assert result["sha256"] == hashlib.sha256(chunk * 16).hexdigest()
    assert result["chunked"] is True


async def test_large_body_with_length_streams_and_keeps_its_length(client: TestClient) -> None:
    payload = bytes(range(256)) * 4096  # 1 MiB: above the read-at-once threshold
    resp = await client.post("/public/upload", data=payload)
    result = await resp.json()
    assert result == {
        "size": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
        "chunked": False,
        "content_length": len(payload),
    }


async def test_chunked_response_streams_to_the_client(
    client: TestClient, service: Upstream
) -> None:
    resp = await client.get("/public/stream")
    assert resp.status == 200
    async with asyncio.timeout(DEADLINE):
        first = await resp.content.readexactly(len(b"first;"))
    assert first == b"first;"
    service.release.set()  # only now does the upstream send the rest
    assert await resp.content.read() == b"second"


async def test_large_response_passes_through_whole(client: TestClient) -> None:
    resp = await client.get("/public/big")
    assert resp.status == 200
    assert resp.headers["Content-Length"] == str(256 * 8192)
    assert await resp.read() == bytes(range(256)) * 8192


async def test_location_and_status_pass_through(client: TestClient) -> None:
    resp = await client.post("/public/create", json={"name": "x"})
    assert resp.status == 201
    assert resp.headers["Location"] == "/public/things/42"
    resp = await client.get("/public/moved", allow_redirects=False)
    assert resp.status == 302
    assert resp.headers["Location"] == "https://elsewhere.test/x"


async def test_upstream_problem_passes_through(client: TestClient) -> None:
    resp = await client.get("/public/problem")
    assert resp.status == 404
    assert resp.content_type == "application/problem+json"
    assert (await resp.json())["title"] == "Not Found"


async def test_keep_alive_connections_are_reused(client: TestClient, service: Upstream) -> None:
    for _ in range(5):
        assert (await client.get("/public/peer")).status == 200
    assert len(service.peers) == 5
    assert len(set(service.peers)) == 1


async def test_request_id_propagates(client: TestClient, service: Upstream) -> None:
    resp = await client.get("/public/peer", headers={"X-Request-ID": "trace-abc.1"})
    assert resp.headers["X-Request-ID"] == "trace-abc.1"
    assert service.seen[-1]["headers"]["X-Request-ID"] == "trace-abc.1"
    resp = await client.get("/public/peer")
    generated = resp.headers["X-Request-ID"]
    assert generated and generated != "trace-abc.1"
    assert service.seen[-1]["headers"]["X-Request-ID"] == generated


async def test_token_checked_and_forwarded(client: TestClient, service: Upstream) -> None:
    assert (await client.get("/private")).status == 401
    headers = service.issuer.auth(scopes=["things:read"])
    resp = await client.get("/private", headers=headers)
    assert resp.status == 200
    assert service.seen[-1]["headers"]["Authorization"] == headers["Authorization"]


async def test_upstream_cut_short(client: TestClient) -> None:
    # a small body of known length is read before answering: a clean 502
    resp = await client.get("/public/cut/length")
    assert resp.status == 502
    assert resp.content_type == "application/problem+json"
    # a streamed body has already started: the client must see it cut, never complete
    resp = await client.get("/public/cut/chunked")
    assert resp.status == 200
    with pytest.raises(ClientPayloadError):
        await resp.read()


async def test_slow_upstream_is_504(client: TestClient) -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    resp = await client.get("/slow")
    assert resp.status == 504
    assert resp.content_type == "application/problem+json"
    assert loop.time() - started < 2


async def test_refused_upstream_is_502(client: TestClient) -> None:
    resp = await client.get("/down/x")
    assert resp.status == 502
    assert resp.content_type == "application/problem+json"
    ready = await client.get("/readyz")
    assert ready.status == 503
    checks = (await ready.json())["checks"]
    assert checks["upstream:down"].startswith("failed")
    assert checks["upstream:svc"] == "ok"
    assert checks["jwks"] == "ok"
