"""The gateway's front server (`gateway.front`) on the wire: raw sockets against a real upstream.

What the shared proxy tests (test_gateway_proxy.py, run against both servers) cannot show:
pipelined requests answered in order, a request split into single bytes, the hand-over of a
request to aiohttp (answered with `Connection: close`) in the middle of a keep-alive
connection, malformed requests, `Connection: close` from the client, and the idle and
slow-head timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from gateway.app import create_app
from gateway.config import parse_config
from tests.support.front import DEADLINE, FrontTestServer, Wire
from tests.support.raw_upstream import OK, Answer, RawFactory, RawUpstream, Seen
from tests.support.tokens import TestIssuer
from tests.support.waiting import wait_until_async


def _upstream_app(issuer: TestIssuer, seen: list[dict[str, Any]]) -> web.Application:
    async def echo(request: web.Request) -> web.Response:
        body = await request.read()
        seen.append({"path": request.path_qs, "headers": dict(request.headers), "body": body})
        return web.json_response(
            {"method": request.method, "path": request.path_qs, "body": body.decode()}
        )

    async def jwks(_request: web.Request) -> web.Response:
        return web.json_response(issuer.jwks())

    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", jwks)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


def _config(url: str, issuer: TestIssuer) -> Any:
    return parse_config(
        {
            "auth": {
                "issuer": issuer.issuer,
                "audience": issuer.audience,
                "jwks_url": f"{url}/.well-known/jwks.json",
            },
            "upstreams": {"svc": {"instances": [url], "health": {"interval": 60}}},
            "routes": [
                {
                    "name": "public",
                    "methods": ["GET", "POST", "HEAD"],
                    "path": "/public/*",
                    "upstream": "svc",
                    "auth": {"required": False},
                    "max_body_bytes": 1000,
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
async def seen() -> list[dict[str, Any]]:
    return []


@pytest.fixture
async def front(
    aiohttp_server: Any, seen: list[dict[str, Any]]
) -> AsyncIterator[tuple[FrontTestServer, TestIssuer]]:
    issuer = TestIssuer()
    upstream: TestServer = await aiohttp_server(_upstream_app(issuer, seen), host="127.0.0.1")
    url = str(upstream.make_url("")).rstrip("/")
    server = FrontTestServer(create_app(_config(url, issuer)), idle_timeout=0.5, head_timeout=0.5)
    await server.start_server()
    yield server, issuer
    await server.close()


@pytest.fixture
async def wire(front: tuple[FrontTestServer, TestIssuer]) -> AsyncIterator[Wire]:
    reader, writer = await asyncio.open_connection("127.0.0.1", front[0].port)
    conn = Wire(reader, writer)
    yield conn
    conn.close()


def _get(path: str, *extra: str) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: gw.test", *extra, "", ""]
    return "\r\n".join(lines).encode()


async def test_pipelined_requests_are_answered_in_order(wire: Wire) -> None:
    await wire.send(_get("/public/a") + _get("/public/b") + _get("/public/c"))
    paths = []
    for _ in range(3):
        status, headers, body = await wire.answer()
        assert status == 200
        assert "connection" not in headers  # kept alive
        paths.append(orjson.loads(body)["path"])
    assert paths == ["/public/a", "/public/b", "/public/c"]


async def test_a_request_split_into_single_bytes(wire: Wire) -> None:
    for byte in _get("/public/split", "X-Request-ID: split-1"):
        await wire.send(bytes([byte]))
    status, headers, body = await wire.answer()
    assert status == 200
    assert headers["x-request-id"] == "split-1"
    assert orjson.loads(body)["path"] == "/public/split"


async def test_post_body_with_length_reaches_the_upstream(
    wire: Wire, seen: list[dict[str, Any]]
) -> None:
    payload = b'{"sku":"X-1"}'
    head = (
        "POST /public/things HTTP/1.1\r\nHost: gw.test\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    ).encode()
    await wire.send(head + payload + _get("/public/after"))
    status, _headers, body = await wire.answer()
    assert status == 200
    assert orjson.loads(body) == {
        "method": "POST",
        "path": "/public/things",
        "body": payload.decode(),
    }
    assert seen[0]["headers"]["X-Forwarded-For"] == "127.0.0.1"
    assert seen[0]["headers"]["Content-Length"] == str(len(payload))
    status, _headers, body = await wire.answer()  # the request after the body: parsed right
    assert orjson.loads(body)["path"] == "/public/after"


async def test_body_over_the_route_limit_is_413(wire: Wire) -> None:
    payload = b"x" * 1500  # the route allows 1000
    head = f"POST /public/big HTTP/1.1\r\nHost: gw.test\r\nContent-Length: {len(payload)}\r\n\r\n"
    await wire.send(head.encode() + payload)
    status, headers, body = await wire.answer()
    assert status == 413
    assert headers["content-type"] == "application/problem+json"
    assert orjson.loads(body)["status"] == 413


async def test_own_endpoint_is_handed_to_aiohttp_then_the_client_reconnects(
    front: tuple[FrontTestServer, TestIssuer], wire: Wire
) -> None:
    await wire.send(_get("/public/first") + _get("/healthz"))
    status, headers, _body = await wire.answer()
    assert status == 200 and "connection" not in headers  # the fast path, kept alive
    status, headers, body = await wire.answer()
    assert status == 200
    assert orjson.loads(body)["status"] == "ok"  # answered by the aiohttp application
    assert headers["connection"] == "close"
    assert await wire.closed()
    # a new connection starts on the fast path again
    reader, writer = await asyncio.open_connection("127.0.0.1", front[0].port)
    again = Wire(reader, writer)
    try:
        await again.send(_get("/public/again"))
        status, headers, _body = await again.answer()
        assert status == 200 and "connection" not in headers
    finally:
        again.close()


async def test_chunked_upload_is_handed_over_and_still_proxied(wire: Wire) -> None:
    head = b"POST /public/chunked HTTP/1.1\r\nHost: gw.test\r\nTransfer-Encoding: chunked\r\n\r\n"
    await wire.send(head + b"5\r\nhello\r\n0\r\n\r\n")
    status, headers, body = await wire.answer()
    assert status == 200
    assert orjson.loads(body)["body"] == "hello"
    assert headers["connection"] == "close"


async def test_problems_on_the_fast_path(wire: Wire) -> None:
    await wire.send(_get("/nowhere", "X-Request-ID: rid-404"))
    status, headers, body = await wire.answer()
    assert status == 404
    assert headers["content-type"] == "application/problem+json"
    assert headers["x-request-id"] == "rid-404"
    doc = orjson.loads(body)
    assert doc["status"] == 404 and doc["title"] == "Not Found"
    assert doc["detail"] == "no route matches this path"
    assert doc["instance"] == "/nowhere"
    assert doc["correlation_id"] == "rid-404"  # the same id the access line carries
    await wire.send(_get("/private"))
    status, headers, _body = await wire.answer()
    assert status == 401
    assert headers["www-authenticate"].startswith("Bearer")
    await wire.send(_get("/public/../private"))
    status, _headers, _body = await wire.answer()
    assert status == 400


async def test_token_checked_on_the_fast_path(
    front: tuple[FrontTestServer, TestIssuer], wire: Wire
) -> None:
    token = front[1].auth(scopes=["things:read"])["Authorization"]
    await wire.send(_get("/private", f"Authorization: {token}"))
    status, _headers, body = await wire.answer()
    assert status == 200
    assert orjson.loads(body)["path"] == "/private"


async def test_head_request_has_no_body(wire: Wire) -> None:
    await wire.send(b"HEAD /public/h HTTP/1.1\r\nHost: gw.test\r\n\r\n" + _get("/public/next"))
    # HEAD's answer carries the GET's Content-Length but no body: read the head only
    async with asyncio.timeout(DEADLINE):
        head = await wire.reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    status, _headers, body = await wire.answer()
    assert status == 200 and orjson.loads(body)["path"] == "/public/next"


async def test_malformed_request_is_400_and_closed(wire: Wire) -> None:
    await wire.send(b"GET /public/x HTTP/1.1\r\nBad Header Line\r\n\r\n")
    status, headers, body = await wire.answer()
    assert status == 400
    assert headers["content-type"] == "application/problem+json"
    assert headers["connection"] == "close"
    assert orjson.loads(body)["status"] == 400
    assert await wire.closed()


async def test_answers_held_for_the_end_of_the_turn_come_before_a_400(wire: Wire) -> None:
    """Answers wait for the end of the loop turn (gateway/writes.py); the 400 for a malformed
    request pipelined behind them is written and the connection closed in that same turn, and
    must not overtake or drop them."""
    await wire.send(
        _get("/public/a") + _get("/public/b") + b"GET /public/x HTTP/1.1\r\nBad Header\r\n\r\n"
    )
    answers = [await wire.answer() for _ in range(3)]
    assert [status for status, _, _ in answers] == [200, 200, 400]
    assert [orjson.loads(body)["path"] for _, _, body in answers[:2]] == ["/public/a", "/public/b"]
    assert answers[2][1]["connection"] == "close"
    assert await wire.closed()


async def test_connection_close_from_the_client(wire: Wire) -> None:
    await wire.send(_get("/public/bye", "Connection: close"))
    status, headers, _body = await wire.answer()
    assert status == 200
    assert headers["connection"] == "close"
    assert await wire.closed()


async def test_while_draining_answers_close_their_connection_and_new_ones_are_taken(
    front: tuple[FrontTestServer, TestIssuer], wire: Wire
) -> None:
    """`FrontServer.linger` (the drain delay, ADR 0033): a kept-alive peer is told to go
    after its answer, and the listener still takes a new connection."""
    await wire.send(_get("/public/before"))
    status, headers, _body = await wire.answer()
    assert status == 200 and "connection" not in headers
    front[0].front.linger()
    await wire.send(_get("/public/during"))
    status, headers, _body = await wire.answer()
    assert status == 200 and headers["connection"] == "close"
    assert await wire.closed()
    reader, writer = await asyncio.open_connection("127.0.0.1", front[0].port)
    fresh = Wire(reader, writer)
    try:
        await fresh.send(_get("/public/new"))
        status, headers, _body = await fresh.answer()
        assert status == 200 and headers["connection"] == "close"
    finally:
        fresh.close()


async def test_stopping_still_answers_a_connection_that_had_not_sent_its_request(
    front: tuple[FrontTestServer, TestIssuer],
) -> None:
    """`FrontServer.close` (ADR 0033): a connection that has not sent a byte yet, and one kept
    alive and idle when the stop begins, may each still bring a request (a balancer's POST
    racing the stop): it is answered with `Connection: close`, then the connection closes."""
    server = front[0]
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    fresh = Wire(reader, writer)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    kept = Wire(reader, writer)  # kept alive: served once, idle when the stop begins
    try:
        await kept.send(_get("/public/first"))
        status, headers, _body = await kept.answer()
        assert status == 200 and "connection" not in headers
        await wait_until_async(lambda: len(server.front.connections) == 2, 5, "the accepts")
        closing = asyncio.create_task(server.close())
        await wait_until_async(lambda: server.front.refusing, 5, "the stop began")
        for wire, path in ((fresh, "/public/late"), (kept, "/public/again")):
            await wire.send(_get(path))
            status, headers, _body = await wire.answer()
            assert status == 200 and headers["connection"] == "close"
            assert await wire.closed()
        await asyncio.wait_for(closing, 30)
    finally:
        fresh.close()
        kept.close()


async def test_http10_is_answered_by_aiohttp(wire: Wire) -> None:
    await wire.send(b"GET /public/old HTTP/1.0\r\nHost: gw.test\r\n\r\n")
    async with asyncio.timeout(DEADLINE):
        data = await wire.reader.read()  # HTTP/1.0 without keep-alive: read to EOF
    assert data.startswith(b"HTTP/1.1 200") or data.startswith(b"HTTP/1.0 200")
    assert b'"path": "/public/old"' in data


async def test_oversized_header_is_431(wire: Wire) -> None:
    await wire.send(_get("/public/x", "X-Big: " + "a" * 9000))
    status, headers, _body = await wire.answer()
    assert status == 431
    assert headers["content-type"] == "application/problem+json"


async def test_idle_connection_is_closed(wire: Wire) -> None:
    await wire.send(_get("/public/x"))
    assert (await wire.answer())[0] == 200
    assert await wire.closed()  # idle_timeout is 0.5 s in this fixture


async def test_slow_request_head_is_cut(wire: Wire) -> None:
    await wire.send(b"GET /public/x HTTP/1.1\r\nHost: gw")  # never finished
    assert await wire.closed()  # head_timeout is 0.5 s in this fixture


async def test_access_line_and_metrics_name_the_route(
    front: tuple[FrontTestServer, TestIssuer], wire: Wire
) -> None:
    await wire.send(_get("/public/m") + _get("/nowhere"))
    assert (await wire.answer())[0] == 200
    assert (await wire.answer())[0] == 404
    reader, writer = await asyncio.open_connection("127.0.0.1", front[0].port)
    scrape = Wire(reader, writer)
    try:
        await scrape.send(_get("/metrics"))
        status, _headers, body = await scrape.answer()
    finally:
        scrape.close()
    assert status == 200
    text = body.decode()
    assert 'route="public"' in text and 'status="200"' in text
    assert 'route="unmatched"' in text and 'status="404"' in text


def test_gateway_server_setting_is_validated() -> None:
    from chassis import ConfigError, from_env
    from gateway.__main__ import GatewaySettings

    assert from_env(GatewaySettings, "GATEWAY_", {}).server == "front"
    assert from_env(GatewaySettings, "GATEWAY_", {"GATEWAY_SERVER": "aiohttp"}).server == "aiohttp"
    with pytest.raises(ConfigError, match="GATEWAY_SERVER"):
        from_env(GatewaySettings, "GATEWAY_", {"GATEWAY_SERVER": "nginx"})


async def test_a_trickling_request_head_is_cut_all_the_same(wire: Wire) -> None:
    """A byte every 0.1 s never lets the connection go idle, yet the head must be all in
    within head_timeout (0.5 s here) of its first byte: closed long before it is complete."""
    head = _get("/public/slowloris")
    sent = 0

    async def trickle() -> None:
        nonlocal sent
        with contextlib.suppress(OSError):
            for byte in head:
                await wire.send(bytes([byte]))
                sent += 1
                await asyncio.sleep(0.1)  # the slow client under test, not a wait for readiness

    task = asyncio.create_task(trickle())
    try:
        assert await wire.closed()
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert sent < len(head)  # cut mid-head: ~4 s of trickling, cut after ~0.5 s


# --- the callback path against an upstream that answers byte for byte -----------------------
# With a kept-alive connection idle, a proxied request is written upstream at once and answered
# from the upstream connection's callback (no task): its failures must come out as they do on
# the task path.

RawFront = Callable[[Callable[[Seen], Answer]], Awaitable[tuple[RawUpstream, Wire]]]


@pytest.fixture
async def raw_front(raw: RawFactory) -> AsyncIterator[RawFront]:
    servers: list[FrontTestServer] = []
    wires: list[Wire] = []
    issuer = TestIssuer()

    async def start(script: Callable[[Seen], Answer]) -> tuple[RawUpstream, Wire]:
        up = await raw(script)
        config = parse_config(
            {
                "auth": {
                    "issuer": issuer.issuer,
                    "audience": issuer.audience,
                    "jwks_url": f"{up.origin}/.well-known/jwks.json",
                },
                "upstreams": {"svc": {"instances": [up.origin], "health": {"interval": 60}}},
                "routes": [
                    {
                        "name": "public",
                        "methods": ["GET", "POST"],
                        "path": "/public/*",
                        "upstream": "svc",
                        "auth": {"required": False},
                        "timeout": 0.3,
                    }
                ],
            },
            environ={},
        )
        server = FrontTestServer(create_app(config))
        await server.start_server()
        servers.append(server)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        wires.append(Wire(reader, writer))
        return up, wires[-1]

    yield start
    for wire in wires:
        wire.close()
    for server in servers:
        await server.close()


def _post(path: str, body: bytes) -> bytes:
    head = f"POST {path} HTTP/1.1\r\nHost: gw.test\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


def _proxied(up: RawUpstream) -> list[Seen]:
    return [s for s in up.requests if s.target.startswith("/public/")]


def _second_on_its_connection(how: str) -> Callable[[Seen], Answer]:
    """A script: the second proxied request on any connection gets `how` (a dead kept-alive
    connection, as after the upstream's keep-alive timeout)."""
    counts: dict[int, int] = {}

    def script(seen: Seen) -> Answer:
        if not seen.target.startswith("/public/"):
            return OK
        counts[seen.conn] = counts.get(seen.conn, 0) + 1
        return how if counts[seen.conn] == 2 else OK

    return script


async def test_a_get_on_a_dead_kept_alive_connection_is_sent_again_on_a_new_one(
    raw_front: RawFront,
) -> None:
    up, wire = await raw_front(_second_on_its_connection("reset"))
    for path in ("/public/a", "/public/b"):
        await wire.send(_get(path))
        status, _headers, body = await wire.answer()
        assert (status, body) == (200, b"ok")
    first, dead, again = _proxied(up)
    assert (first.target, dead.target, again.target) == ("/public/a", "/public/b", "/public/b")
    assert first.conn == dead.conn != again.conn  # replayed once, on a new connection


@pytest.mark.parametrize("how", ["reset", "close"])
async def test_a_post_on_a_dead_kept_alive_connection_is_a_502_never_sent_twice(
    raw_front: RawFront, how: str
) -> None:
    up, wire = await raw_front(_second_on_its_connection(how))
    await wire.send(_post("/public/pay", b"1"))
    assert (await wire.answer())[0] == 200
    await wire.send(_post("/public/pay", b"2") + _get("/public/after"))
    status, headers, body = await wire.answer()
    assert status == 502
    assert headers["content-type"] == "application/problem+json"
    assert orjson.loads(body)["status"] == 502
    assert [s.body for s in _proxied(up) if s.method == "POST"] == [b"1", b"2"]
    status, _headers, body = await wire.answer()  # the next request: answered as usual
    assert (status, body) == (200, b"ok")


async def test_an_upstream_that_never_answers_is_a_504_problem_on_the_callback_path(
    raw_front: RawFront,
) -> None:
    up, wire = await raw_front(lambda seen: "hang" if seen.target == "/public/hang" else OK)
    await wire.send(_get("/public/warm"))  # leaves a kept-alive connection idle
    assert (await wire.answer())[0] == 200
    loop = asyncio.get_running_loop()
    begun = loop.time()
    await wire.send(_get("/public/hang", "X-Request-ID: hang-1"))
    status, headers, body = await wire.answer()
    assert status == 504 and loop.time() - begun < 2.0  # the route's timeout is 0.3 s
    assert headers["content-type"] == "application/problem+json"
    assert headers["x-request-id"] == "hang-1"
    assert orjson.loads(body)["status"] == 504
    await wire.send(_get("/public/after"))
    assert (await wire.answer())[0] == 200
    assert [s.target for s in _proxied(up)] == ["/public/warm", "/public/hang", "/public/after"]


async def test_in_process_limits_are_decided_on_the_callback_path(
    aiohttp_server: Any, seen: list[dict[str, Any]]
) -> None:
    """The embedded default (no Redis): a limited route is decided at once, without a task;
    an admitted answer carries the RateLimit fields, a refused one is a 429 problem."""
    issuer = TestIssuer()
    upstream: TestServer = await aiohttp_server(_upstream_app(issuer, seen), host="127.0.0.1")
    url = str(upstream.make_url("")).rstrip("/")
    config = parse_config(
        {
            "auth": {"issuer": issuer.issuer, "jwks_url": f"{url}/.well-known/jwks.json"},
            "upstreams": {"svc": {"instances": [url], "health": {"interval": 60}}},
            "rate_limits": {"policies": {"tight": {"limit": 60, "period": 3600, "burst": 2}}},
            "routes": [
                {
                    "name": "limited",
                    "methods": ["GET"],
                    "path": "/limited/*",
                    "upstream": "svc",
                    "auth": {"required": False},
                    "rate_limit": "tight",
                }
            ],
        },
        environ={},
    )
    server = FrontTestServer(create_app(config))
    await server.start_server()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    wire = Wire(reader, writer)
    try:
        answers = []
        for i in range(3):
            await wire.send(_get(f"/limited/{i}", f"X-Request-ID: lim-{i}"))
            answers.append(await wire.answer())
    finally:
        wire.close()
        await server.close()
    (s0, h0, _), (s1, h1, _), (s2, h2, b2) = answers
    assert (s0, s1, s2) == (200, 200, 429)
    assert h0["ratelimit-policy"] == h2["ratelimit-policy"] and "ratelimit" in h1
    assert h2["content-type"] == "application/problem+json" and int(h2["retry-after"]) >= 1
    assert h2["x-request-id"] == "lim-2" and orjson.loads(b2)["status"] == 429
    assert [s["path"] for s in seen] == ["/limited/0", "/limited/1"]  # the third never went up
