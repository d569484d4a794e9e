"""The proxy stage on fake upstreams: problems for every failure, the upstream's answer as is."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import web

from chassis.drain import DRAIN
from gateway.app import create_app
from gateway.http1 import Http1Transport
from gateway.transport import AiohttpTransport, MockResponse, MockTransport, OutboundRequest

from .conftest import IDENTITY, SVC, FakeUpstreams, GatewayClient, make_config, refused


async def _problem(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/problem+json"
    doc: dict[str, Any] = await resp.json()
    assert doc["status"] == status
    assert doc["correlation_id"] == resp.headers["X-Request-ID"]
    return doc


async def test_no_route_is_404(gateway: GatewayClient) -> None:
    client = await gateway()
    doc = await _problem(await client.get("/nowhere"), 404)
    assert doc["instance"] == "/nowhere"


async def test_wrong_method_is_405_with_allow(gateway: GatewayClient) -> None:
    client = await gateway()
    resp = await client.delete("/items")
    await _problem(resp, 405)
    assert resp.headers["Allow"] == "GET, HEAD, POST"


async def _raw_get(host: str, port: int, target: str) -> bytes:
    """A request line exactly as given (client libraries normalise '..' away)."""
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: gw\r\nConnection: close\r\n\r\n".encode())
    try:
        return await reader.read()
    finally:
        writer.close()
        await writer.wait_closed()


async def test_dot_segments_are_refused(gateway: GatewayClient, upstreams: FakeUpstreams) -> None:
    client = await gateway()
    for path in ("/public/../items", "/public/%2e%2e/items", "/public/x%2F..%2F..%2Fitems"):
        answer = await _raw_get(str(client.host), int(client.port or 0), path)
        assert answer.startswith(b"HTTP/1.1 400 "), answer
        assert b"application/problem+json" in answer
    assert upstreams.seen(SVC) == []


async def test_request_is_forwarded_with_query_and_forwarded_headers(
    gateway: GatewayClient, upstreams: FakeUpstreams
) -> None:
    client = await gateway()
    resp = await client.get(
        "/public/a%20b?x=1&y=%26",
        headers={
            "X-Request-ID": "req-123",
            "Connection": "keep-alive",
            "X-Forwarded-For": "9.9.9.9",
        },
    )
    assert resp.status == 200
    assert resp.headers["X-Request-ID"] == "req-123"
    (seen,) = upstreams.seen(SVC)
    assert seen.method == "GET"
    assert seen.target == "/public/a%20b?x=1&y=%26"
    assert seen.headers["X-Request-ID"] == "req-123"
    assert seen.headers["X-Forwarded-For"] == "9.9.9.9, 127.0.0.1"
    assert seen.headers["X-Forwarded-Proto"] == "http"
    assert seen.headers["X-Forwarded-Host"] == f"{client.host}:{client.port}"
    assert "Connection" not in seen.headers
    assert "Host" not in seen.headers
    assert seen.timeout == 5.0


async def test_rewrite(gateway: GatewayClient, upstreams: FakeUpstreams) -> None:
    client = await gateway()
    assert (await client.get("/old/7?full=1")).status == 200
    (seen,) = upstreams.seen(SVC)
    assert seen.target == "/v2/things/7?full=1"


async def test_upstream_answer_passes_through(
    gateway: GatewayClient, upstreams: FakeUpstreams
) -> None:
    problem = {"type": "about:blank", "title": "Conflict", "status": 409, "detail": "taken"}
    upstreams.on(
        SVC,
        "/public/conflict",
        lambda _r: MockResponse(
            409,
            {"Content-Type": "application/problem+json", "Connection": "close", "X-Up": "1"},
            orjson.dumps(problem),
        ),
    )
    upstreams.on(
        SVC,
        "/public/created",
        lambda _r: MockResponse(201, {"Location": "/public/things/1"}, b"", reason="Created"),
    )
    client = await gateway()
    resp = await client.get("/public/conflict")
    assert resp.status == 409
    assert resp.content_type == "application/problem+json"
    assert await resp.json() == problem
    assert resp.headers["X-Up"] == "1"
    resp = await client.post("/public/created", json={"a": 1}, allow_redirects=False)
    assert resp.status == 201
    assert resp.headers["Location"] == "/public/things/1"


async def test_post_body_is_forwarded(gateway: GatewayClient, upstreams: FakeUpstreams) -> None:
    client = await gateway()
    resp = await client.post("/public/echo", json={"name": "x"})
    assert resp.status == 200
    (seen,) = upstreams.seen(SVC)
    assert seen.json() == {"name": "x"}
    assert seen.headers["Content-Type"] == "application/json"


async def test_streamed_upstream_body(gateway: GatewayClient, upstreams: FakeUpstreams) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for i in range(50):
            yield b"%d," % i

    upstreams.on(SVC, "/public/stream", lambda _r: MockResponse(200, {}, chunks()))
    client = await gateway()
    resp = await client.get("/public/stream")
    assert resp.status == 200
    assert await resp.read() == b"".join(b"%d," % i for i in range(50))


async def test_body_over_the_limit_by_content_length_is_413(
    gateway: GatewayClient, upstreams: FakeUpstreams
) -> None:
    client = await gateway()
    doc = await _problem(await client.post("/upload", data=b"x" * 101), 413)
    assert "100 bytes" in doc["detail"]
    assert (await client.post("/upload", data=b"x" * 100)).status == 200
    # the server-wide default limit applies to routes without their own
    await _problem(await client.post("/public/x", data=b"x" * 1001), 413)
    assert len(upstreams.seen(SVC)) == 1


async def test_chunked_body_over_the_limit_is_413(
    gateway: GatewayClient, upstreams: FakeUpstreams
) -> None:
    async def body(n: int) -> AsyncIterator[bytes]:
        for _ in range(n):
            yield b"y" * 30

    client = await gateway()
    await _problem(await client.post("/upload", data=body(4)), 413)
    resp = await client.post("/upload", data=body(3))
    assert resp.status == 200
    (seen,) = upstreams.seen(SVC)
    assert seen.body == b"y" * 90


async def test_slow_upstream_is_504(gateway: GatewayClient, upstreams: FakeUpstreams) -> None:
    async def slow(_request: OutboundRequest) -> MockResponse:
        await asyncio.sleep(5)
        return MockResponse()

    upstreams.on(SVC, "/slow", slow)
    client = await gateway()
    loop = asyncio.get_running_loop()
    started = loop.time()
    doc = await _problem(await client.get("/slow"), 504)
    assert loop.time() - started < 2
    assert "svc" in doc["detail"]


async def test_unreachable_upstream_is_502(
    gateway: GatewayClient, upstreams: FakeUpstreams
) -> None:
    upstreams.on(SVC, "/public/down", refused)
    client = await gateway()
    await _problem(await client.get("/public/down"), 502)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_refused_port_is_502_with_the_real_transport(aiohttp_client: Any) -> None:
    config = make_config(
        upstreams={
            "identity": {"instances": [IDENTITY], "health": {"interval": 60}},
            "svc": {
                "instances": [f"http://127.0.0.1:{_closed_port()}"],
                "health": {"interval": 60},
            },
        }
    )
    transport = AiohttpTransport()
    try:
        client = await aiohttp_client(create_app(config, transport=transport))
        await _problem(await client.get("/public/x"), 502)
    finally:
        await transport.close()


@pytest.mark.parametrize("transport_kind", ["http1", "aiohttp"])
async def test_a_request_never_sent_goes_to_the_next_instance_whatever_its_method(
    aiohttp_client: Any, aiohttp_server: Any, transport_kind: str
) -> None:
    """A refused connection means the request never left (a drained or dead instance): even a
    POST, without a retry policy, goes to the next instance, as nginx does. A POST that did
    reach an instance is never sent twice (the http1 tests)."""
    seen: list[str] = []

    async def create(request: web.Request) -> web.Response:
        seen.append(request.method)
        return web.json_response({"created": True}, status=201)

    app = web.Application()
    app.router.add_post("/public/create", create)
    alive = await aiohttp_server(app, host="127.0.0.1")
    config = make_config(
        upstreams={
            "identity": {"instances": [IDENTITY], "health": {"interval": 60}},
            "svc": {
                "instances": [
                    f"http://127.0.0.1:{_closed_port()}",
                    str(alive.make_url("")).rstrip("/"),
                ],
                "balancing": "round_robin",
                "health": {"interval": 60},
            },
        }
    )
    transport = Http1Transport() if transport_kind == "http1" else AiohttpTransport()
    try:
        client = await aiohttp_client(create_app(config, transport=transport))
        for _ in range(2):  # round robin: one of the two starts on the refusing instance
            resp = await client.post("/public/create", json={"x": 1})
            assert resp.status == 201, await resp.text()
        assert seen == ["POST", "POST"]
    finally:
        await transport.close()


async def test_no_healthy_instance_is_503(gateway: GatewayClient, upstreams: FakeUpstreams) -> None:
    upstreams.on(SVC, "/health/ready", lambda _r: MockResponse(503))
    client = await gateway()
    resp = await client.get("/readyz")
    assert resp.status == 503
    body = await resp.json()
    assert body["checks"]["upstream:svc"].startswith("failed")
    assert body["checks"]["jwks"] == "ok"
    resp = await client.get("/public/x")
    await _problem(resp, 503)
    assert resp.headers["Retry-After"] == "5"


async def test_round_robin_over_instances(aiohttp_client: Any, upstreams: FakeUpstreams) -> None:
    config = make_config(
        upstreams={
            "identity": {"instances": [IDENTITY], "health": {"interval": 60}},
            "svc": {"instances": [SVC, "http://svc2.test"], "health": {"interval": 60}},
        }
    )
    client = await aiohttp_client(create_app(config, transport=upstreams.transport))
    for _ in range(4):
        assert (await client.get("/public/x")).status == 200
    origins = [r.origin for r in upstreams.transport.requests]
    assert origins == [SVC, "http://svc2.test", SVC, "http://svc2.test"]


async def test_own_endpoints(gateway: GatewayClient, upstreams: FakeUpstreams) -> None:
    upstreams.on(SVC, "/health/ready", lambda _r: MockResponse(json={"status": "ok"}))
    upstreams.on(IDENTITY, "/health/ready", lambda _r: MockResponse(json={"status": "ok"}))
    client = await gateway()
    for path in ("/healthz", "/health/live"):
        resp = await client.get(path)
        assert resp.status == 200
        assert await resp.json() == {"status": "ok"}
    for path in ("/readyz", "/health/ready"):
        resp = await client.get(path)
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["checks"] == {
            "upstream:identity": "ok",
            "upstream:svc": "ok",
            "jwks": "ok",
        }


async def test_readiness_is_503_at_once_while_draining(
    gateway: GatewayClient, upstreams: FakeUpstreams
) -> None:
    """SIGTERM begins the drain (ADR 0033): both readiness paths say so, liveness does not."""
    upstreams.on(SVC, "/health/ready", lambda _r: MockResponse(json={"status": "ok"}))
    upstreams.on(IDENTITY, "/health/ready", lambda _r: MockResponse(json={"status": "ok"}))
    client = await gateway()
    assert (await client.get("/readyz")).status == 200
    client.app[DRAIN].begin()
    for path in ("/readyz", "/health/ready"):
        resp = await client.get(path)
        assert resp.status == 503
        assert await resp.json() == {"status": "draining"}
    assert (await client.get("/healthz")).status == 200
    assert (await client.get("/public/x")).status == 200  # requests are still served


async def test_readiness_fails_when_jwks_is_unreachable(
    gateway: GatewayClient, upstreams: FakeUpstreams
) -> None:
    # no handler for this origin: the default echo answer is not a key set
    client = await gateway(
        auth={"issuer": "https://i", "audience": "a", "jwks_url": "http://nowhere.test/jwks"}
    )
    resp = await client.get("/readyz")
    assert resp.status == 503
    assert (await resp.json())["checks"]["jwks"].startswith("failed")


async def test_metrics_are_labelled_by_gateway_route(gateway: GatewayClient) -> None:
    client = await gateway()
    await client.get("/old/1")
    await client.get("/nowhere")
    text = await (await client.get("/metrics")).text()
    assert 'route="renamed"' in text
    assert 'route="unmatched"' in text
    assert 'status="404"' in text


async def test_access_log_names_route_and_upstream(gateway: GatewayClient, caplog: Any) -> None:
    client = await gateway()
    with caplog.at_level("INFO", logger="portico.http"):
        await client.get("/old/1")
    (record,) = [r for r in caplog.records if r.name == "portico.http"]
    assert record.route == "renamed"
    assert record.upstream == "svc"
    assert record.status == 200


async def test_openapi_merges_routed_operations(
    gateway: GatewayClient, upstreams: FakeUpstreams
) -> None:
    spec = {
        "openapi": "3.0.3",
        "info": {"title": "svc", "version": "1"},
        "paths": {
            "/items": {"get": {"summary": "list"}, "post": {"summary": "create"}},
            "/items/{item_id}": {"get": {"summary": "one"}, "delete": {"summary": "unrouted"}},
            "/internal/admin": {"get": {"summary": "not public"}},
        },
        "components": {"schemas": {"Item": {"type": "object"}}},
    }
    upstreams.on(SVC, "/openapi.json", lambda _r: MockResponse(json=spec))
    upstreams.on(IDENTITY, "/openapi.json", refused)
    client = await gateway()
    resp = await client.get("/openapi.json")
    assert resp.status == 200
    doc = await resp.json()
    assert set(doc["paths"]["/items"]) == {"get", "post"}
    assert set(doc["paths"]["/items/{item_id}"]) == {"get"}
    assert "/internal/admin" not in doc["paths"]
    assert "/healthz" in doc["paths"]
    assert doc["components"]["schemas"]["Item"] == {"type": "object"}
    # cached: a second request does not fetch the available spec again
    await client.get("/openapi.json")
    fetched = [r for r in upstreams.transport.requests if r.target == "/openapi.json"]
    assert [r.origin for r in fetched].count(SVC) == 1


async def test_unexpected_mock_shapes_do_not_leak(aiohttp_client: Any) -> None:
    """A handler bug upstream of the proxy still ends as a problem document, no traceback."""

    def broken(_request: OutboundRequest) -> MockResponse:
        raise RuntimeError("boom")

    app = create_app(make_config(), transport=MockTransport(broken))
    client = await aiohttp_client(app)
    resp = await client.get("/public/x")
    doc = await _problem(resp, 500)
    assert "boom" not in orjson.dumps(doc).decode()
