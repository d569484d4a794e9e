"""The pooled HTTP/1.1 client against a raw asyncio server that answers byte for byte.

A real aiohttp upstream cannot play the cases that matter here: a connection reset just as a
kept-alive connection is reused, `Connection: close`, a body delimited by EOF, a 103 before
the answer, a malformed status line. `RawUpstream` parses each request with httptools and lets
the test script the exact bytes (or the reset) that go back.
"""

from __future__ import annotations

import asyncio
import gc
import socket
import weakref
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvloop

from gateway.http1 import Http1Transport
from gateway.transport import (
    Body,
    OutboundRequest,
    PoolTimeout,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from tests.support.raw_upstream import DEADLINE, OK, Answer, RawFactory, Seen
from tests.support.waiting import wait_until_async


@pytest.fixture
async def client() -> AsyncIterator[Http1Transport]:
    transport = Http1Transport({"svc": 4}, pool_timeout=0.3)
    yield transport
    await transport.close()


def req(
    origin: str,
    method: str = "GET",
    target: str = "/x",
    *,
    headers: dict[str, str] | None = None,
    body: Body = None,
    timeout: float = 2.0,
) -> OutboundRequest:
    return OutboundRequest("svc", origin, method, target, headers or {}, body, timeout)


async def fetch(client: Http1Transport, request: OutboundRequest) -> tuple[int, bytes]:
    response = await client.send(request)
    try:
        return response.status, await response.read()
    finally:
        response.close()


async def test_keep_alive_reuses_one_connection(raw: RawFactory, client: Http1Transport) -> None:
    up = await raw(lambda _: OK)
    for _ in range(3):
        assert await fetch(client, req(up.origin)) == (200, b"ok")
    assert up.connections == 1
    assert [s.conn for s in up.requests] == [1, 1, 1]


async def test_request_head_is_exactly_what_was_asked(
    raw: RawFactory, client: Http1Transport
) -> None:
    up = await raw(lambda _: OK)
    headers = {"X-A": "1", "host": "evil.test", "Content-Length": "99", "Accept": "a/b"}
    await fetch(client, req(up.origin, target="/p/q?a=1&b=%20", headers=headers))
    seen = up.requests[0]
    assert seen.target == "/p/q?a=1&b=%20"
    names = [k.lower() for k, _ in seen.headers]
    assert names == ["host", "x-a", "accept"]  # no User-Agent, no Accept-Encoding, no length
    assert seen.header("Host") == up.origin.removeprefix("http://")


async def test_header_with_line_break_is_refused(raw: RawFactory, client: Http1Transport) -> None:
    up = await raw(lambda _: OK)
    with pytest.raises(UpstreamUnavailable):
        await client.send(req(up.origin, headers={"X-A": "1\r\nX-Injected: yes"}))
    assert up.requests == []


async def test_connection_close_is_honoured(raw: RawFactory, client: Http1Transport) -> None:
    up = await raw(
        lambda _: b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbye"
    )
    assert await fetch(client, req(up.origin)) == (200, b"bye")
    assert await fetch(client, req(up.origin)) == (200, b"bye")
    assert up.connections == 2


async def test_chunked_and_eof_delimited_response_bodies(
    raw: RawFactory, client: Http1Transport
) -> None:
    def script(seen: Seen) -> Answer:
        if seen.target == "/chunked":
            return (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
            )
        return b"HTTP/1.0 200 OK\r\n\r\nuntil the end"  # no length: ends with the connection

    up = await raw(script)

    async def eof_body(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\n\r\nuntil the end")
        await writer.drain()
        writer.close()

    response = await client.send(req(up.origin, target="/chunked"))
    assert response.content_length is None
    assert [c async for c in response.iter_chunks()] in ([b"hello world"], [b"hello", b" world"])
    response.close()
    assert await fetch(client, req(up.origin, target="/chunked")) == (200, b"hello world")
    assert up.connections == 1  # chunked kept the connection

    up.script = lambda _: eof_body
    assert await fetch(client, req(up.origin, target="/eof")) == (200, b"until the end")


async def test_request_bodies_bytes_chunked_and_streamed_with_length(
    raw: RawFactory, client: Http1Transport
) -> None:
    up = await raw(lambda _: OK)
    origin = up.origin

    async def parts() -> AsyncIterator[bytes]:
        yield b"abc"
        yield b""
        yield b"defg"

    await fetch(client, req(origin, "POST", body=b"hello"))
    await fetch(client, req(origin, "POST", body=parts()))
    await fetch(client, req(origin, "PUT", body=parts(), headers={"Content-Length": "7"}))
    await fetch(client, req(origin, "POST"))
    await fetch(client, req(origin, "GET"))
    first, chunked, sized, empty, get = up.requests
    assert (first.body, first.header("Content-Length")) == (b"hello", "5")
    assert chunked.header("Transfer-Encoding") == "chunked" and chunked.body == b"abcdefg"
    assert b"3\r\nabc\r\n4\r\ndefg\r\n0\r\n\r\n" in chunked.raw
    assert sized.header("Content-Length") == "7" and sized.header("Transfer-Encoding") is None
    assert sized.body == b"abcdefg"
    assert empty.header("Content-Length") == "0"
    assert get.header("Content-Length") is None and get.header("Transfer-Encoding") is None
    assert up.connections == 1


async def test_request_body_streams_before_it_is_complete(
    raw: RawFactory, client: Http1Transport
) -> None:
    up = await raw(lambda _: OK)

    async def parts() -> AsyncIterator[bytes]:
        yield b"first"
        async with asyncio.timeout(DEADLINE):
            await up.first_byte.wait()  # the upstream saw the first chunk already
        yield b"second"

    assert await fetch(client, req(up.origin, "POST", body=parts())) == (200, b"ok")
    assert up.requests[0].body == b"firstsecond"


async def test_failing_request_body_is_unavailable_and_drops_the_connection(
    raw: RawFactory, client: Http1Transport
) -> None:
    up = await raw(lambda _: OK)

    async def parts() -> AsyncIterator[bytes]:
        yield b"first"
        raise RuntimeError("client went away")

    with pytest.raises(UpstreamUnavailable, match="request body failed"):
        await client.send(req(up.origin, "POST", body=parts()))
    assert await fetch(client, req(up.origin)) == (200, b"ok")
    assert up.connections == 2


async def test_no_answer_is_a_timeout_and_the_connection_is_dropped(
    raw: RawFactory, client: Http1Transport
) -> None:
    up = await raw(lambda seen: "hang" if seen.target == "/slow" else OK)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(UpstreamTimeout):
        await client.send(req(up.origin, target="/slow", timeout=0.2))
    assert loop.time() - started < 1.0
    assert await fetch(client, req(up.origin)) == (200, b"ok")
    assert up.connections == 2


async def test_stalled_body_is_a_timeout(raw: RawFactory, client: Http1Transport) -> None:
    async def stall(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await writer.drain()
        await up.stopping.wait()

    up = await raw(lambda _: stall)
    response = await client.send(req(up.origin, timeout=0.2))
    chunks = response.iter_chunks()
    assert await anext(chunks) == b"abc"
    with pytest.raises(UpstreamTimeout):
        await anext(chunks)
    response.close()


async def test_body_cut_short_is_unavailable(raw: RawFactory, client: Http1Transport) -> None:
    up = await raw(
        lambda _: b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nConnection: close\r\n\r\nabc"
    )
    response = await client.send(req(up.origin))
    with pytest.raises(UpstreamUnavailable, match="broke off"):
        await response.read()
    response.close()


async def test_reset_on_reused_connection_is_retried_once_for_get(
    raw: RawFactory, client: Http1Transport
) -> None:
    # the first connection answers once, then dies when reused (as after a keep-alive timeout)
    up = await raw(lambda seen: "reset" if (seen.conn, len(up.requests)) == (1, 2) else OK)
    origin = up.origin
    assert await fetch(client, req(origin)) == (200, b"ok")
    assert await fetch(client, req(origin)) == (200, b"ok")
    assert [s.conn for s in up.requests] == [1, 1, 2]


@pytest.mark.parametrize("how", ["reset", "close"])
async def test_reset_on_reused_connection_is_not_retried_for_post(
    raw: RawFactory, client: Http1Transport, how: str
) -> None:
    up = await raw(lambda seen: how if len(up.requests) == 2 else OK)
    origin = up.origin
    assert await fetch(client, req(origin, "POST", body=b"1")) == (200, b"ok")
    with pytest.raises(UpstreamUnavailable):
        await client.send(req(origin, "POST", body=b"2"))
    assert [s.body for s in up.requests] == [b"1", b"2"]  # never sent twice


async def test_reset_on_new_connection_is_not_retried(
    raw: RawFactory, client: Http1Transport
) -> None:
    up = await raw(lambda _: "reset")
    with pytest.raises(UpstreamUnavailable):
        await client.send(req(up.origin))
    assert len(up.requests) == 1


async def test_idle_connection_closed_by_upstream_is_not_reused(
    raw: RawFactory, client: Http1Transport
) -> None:
    async def answer_then_close(writer: asyncio.StreamWriter) -> None:
        writer.write(OK)  # no Connection: close, but the upstream closes anyway
        await writer.drain()
        writer.close()

    up = await raw(lambda _: answer_then_close)
    origin = up.origin
    assert await fetch(client, req(origin, "POST", body=b"1")) == (200, b"ok")
    fin = "the FIN to reach us"
    await wait_until_async(
        lambda: not client._pools[("svc", origin)].idle, DEADLINE, fin, interval=0.01
    )
    assert await fetch(client, req(origin, "POST", body=b"2")) == (200, b"ok")
    assert up.connections == 2


async def test_refused_is_unavailable(client: Http1Transport) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(UpstreamUnavailable, match="unreachable"):
        await client.send(req(f"http://127.0.0.1:{port}"))


@pytest.mark.parametrize(
    ("method", "answer"),
    [
        ("HEAD", b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"),
        ("GET", b"HTTP/1.1 204 No Content\r\n\r\n"),
        ("GET", b"HTTP/1.1 304 Not Modified\r\nContent-Length: 1000\r\n\r\n"),
    ],
)
async def test_head_204_304_have_no_body_and_keep_the_connection(
    raw: RawFactory, client: Http1Transport, method: str, answer: bytes
) -> None:
    up = await raw(lambda seen: OK if seen.target == "/next" else answer)
    origin = up.origin
    status, body = await fetch(client, req(origin, method))
    assert body == b"" and status in (200, 204, 304)
    assert await fetch(client, req(origin, target="/next")) == (200, b"ok")
    assert up.connections == 1


async def test_interim_response_is_skipped(raw: RawFactory, client: Http1Transport) -> None:
    up = await raw(lambda _: b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n" + OK)
    response = await client.send(req(up.origin))
    assert response.status == 200 and "Link" not in response.headers
    assert await response.read() == b"ok"
    response.close()


async def test_malformed_response_is_unavailable(raw: RawFactory, client: Http1Transport) -> None:
    up = await raw(lambda _: b"HTTP/1.1 2OO OK\r\n\r\n")
    with pytest.raises(UpstreamUnavailable, match="invalid HTTP response"):
        await client.send(req(up.origin))


async def test_response_headers_are_kept_as_sent(raw: RawFactory, client: Http1Transport) -> None:
    up = await raw(
        lambda _: (
            b"HTTP/1.1 201 Created\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n"
            b"Location: /x/1\r\nContent-Length: 0\r\n\r\n"
        )
    )
    response = await client.send(req(up.origin))
    assert (response.status, response.reason) == (201, "Created")
    assert response.headers.getall("set-cookie") == ["a=1", "b=2"]  # type: ignore[union-attr]
    assert response.headers["location"] == "/x/1"
    assert response.content_length == 0
    response.close()


async def test_large_body_streams_with_back_pressure(
    raw: RawFactory, client: Http1Transport
) -> None:
    payload = bytes(range(256)) * 16384  # 4 MiB

    async def big(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(payload))
        for i in range(0, len(payload), 65536):
            writer.write(payload[i : i + 65536])
            await writer.drain()

    up = await raw(lambda _: big)
    response = await client.send(req(up.origin))
    received = bytearray()
    async for chunk in response.iter_chunks():
        received += chunk
        await asyncio.sleep(0)  # a slow reader
    response.close()
    assert received == payload
    assert await fetch(client, req(up.origin)) != ()
    assert up.connections == 1


async def test_unread_body_drops_the_connection(raw: RawFactory, client: Http1Transport) -> None:
    async def partial(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await writer.drain()

    up = await raw(lambda seen: OK if seen.target == "/next" else partial)
    response = await client.send(req(up.origin))
    response.close()  # before the body ended
    assert await fetch(client, req(up.origin, target="/next")) == (200, b"ok")
    assert up.connections == 2


async def test_pool_limit_waits_then_times_out(raw: RawFactory) -> None:
    async def partial(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await writer.drain()

    up = await raw(lambda seen: partial if seen.target == "/partial" else OK)
    origin = up.origin
    client = Http1Transport({"svc": 1}, pool_timeout=0.2)
    try:
        held = await client.send(req(origin))  # holds the only connection
        waiting = asyncio.create_task(fetch(client, req(origin)))
        await asyncio.sleep(0.05)
        assert not waiting.done()
        await held.read()
        held.close()  # handed straight to the waiter
        assert await waiting == (200, b"ok")
        assert up.connections == 1

        held = await client.send(req(origin))
        with pytest.raises(PoolTimeout):
            await client.send(req(origin))
        held.close()
        # a failed or dropped connection frees its slot for a waiter
        held = await client.send(req(origin, target="/partial"))
        waiting = asyncio.create_task(fetch(client, req(origin)))
        await asyncio.sleep(0.05)
        held.close()  # body unfinished: dropped, and the waiter opens its own
        assert await waiting == (200, b"ok")
        assert up.connections == 2
    finally:
        await client.close()


async def test_close_releases_everything(raw: RawFactory) -> None:
    up = await raw(lambda _: OK)
    client = Http1Transport()
    await fetch(client, req(up.origin))
    await client.close()
    ended = "the upstream to see the connection end"
    await wait_until_async(lambda: up.closed == up.connections, DEADLINE, ended, interval=0.01)


async def test_the_same_on_uvloop(raw: RawFactory) -> None:
    """The gateway runs on uvloop, whose transports and callbacks order differ from asyncio's."""
    up = await raw(
        lambda seen: (
            b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n" if seen.method == "HEAD" else OK
        )
    )

    async def scenario() -> list[tuple[int, bytes]]:
        client = Http1Transport()
        try:

            async def parts() -> AsyncIterator[bytes]:
                yield b"abc"

            return [
                await fetch(client, req(up.origin)),
                await fetch(client, req(up.origin, "POST", body=parts())),
                await fetch(client, req(up.origin, "HEAD")),
                await fetch(client, req(up.origin)),
            ]
        finally:
            await client.close()

    results = await asyncio.to_thread(uvloop.run, scenario())
    assert results == [(200, b"ok"), (200, b"ok"), (200, b""), (200, b"ok")]
    assert up.connections == 1


# --- start(): the request written now, the answer through a callback -----------------------


async def started(client: Http1Transport, request: OutboundRequest) -> Any:
    """`client.start(request, ...)`, then the response its callback was given."""
    told: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    response = client.start(request, lambda answered: told.set_result(id(answered)))
    assert response is not None, "no idle connection to start on"
    async with asyncio.timeout(DEADLINE):
        assert await told == id(response)  # the id only: the test keeps no stray reference
    return response


async def test_start_needs_an_idle_connection_and_answers_through_the_callback(
    raw: RawFactory, client: Http1Transport
) -> None:
    up = await raw(lambda _: OK)
    told: list[Any] = []
    assert client.start(req(up.origin), told.append) is None  # no pool, nothing sent
    assert up.requests == []
    assert await fetch(client, req(up.origin)) == (200, b"ok")  # one kept-alive connection
    response = await started(client, req(up.origin, "POST", body=b"abc"))
    assert (response.status, response.failure(), response.whole_body()) == (200, None, b"ok")
    response.close()
    assert await fetch(client, req(up.origin)) == (200, b"ok")
    assert [s.conn for s in up.requests] == [1, 1, 1]
    assert up.requests[1].body == b"abc"
    assert told == []  # the refused start never calls back


async def test_start_tells_of_a_head_whose_body_is_still_coming(
    raw: RawFactory, client: Http1Transport
) -> None:
    async def slow_body(writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nabc")
        await writer.drain()
        await up.first_byte.wait()  # the rest once the test has seen the head
        writer.write(b"def")
        await writer.drain()

    up = await raw(lambda seen: slow_body if seen.target == "/slow" else OK)
    await fetch(client, req(up.origin))
    response = await started(client, req(up.origin, target="/slow"))
    assert response.status == 200 and response.whole_body() is None  # not all of it yet
    up.first_byte.set()
    assert await response.read() == b"abcdef"
    response.close()
    assert await fetch(client, req(up.origin)) == (200, b"ok")
    assert up.connections == 1


async def test_start_reports_a_timeout_and_drops_the_connection(
    raw: RawFactory, client: Http1Transport
) -> None:
    up = await raw(lambda seen: "hang" if seen.target == "/slow" else OK)
    await fetch(client, req(up.origin))
    loop = asyncio.get_running_loop()
    begun = loop.time()
    response = await started(client, req(up.origin, target="/slow", timeout=0.2))
    assert loop.time() - begun < 1.0
    assert isinstance(response.failure(), UpstreamTimeout) and not response.stale
    response.close()
    assert await fetch(client, req(up.origin)) == (200, b"ok")
    assert up.connections == 2


async def test_start_on_a_dead_kept_alive_connection_is_stale_and_replayed_fresh(
    raw: RawFactory, client: Http1Transport
) -> None:
    up = await raw(lambda seen: "reset" if (seen.conn, len(up.requests)) == (1, 2) else OK)
    await fetch(client, req(up.origin))
    response = await started(client, req(up.origin))
    assert response.stale
    assert isinstance(response.failure(), UpstreamUnavailable)
    assert "reset a kept-alive connection" in str(response.failure())
    response.close()
    assert await fetch(client, req(up.origin)) == (200, b"ok")  # the pool still works
    again = await client.send(req(up.origin), fresh=True)
    assert again.status == 200 and await again.read() == b"ok"
    again.close()
    assert [s.conn for s in up.requests] == [1, 1, 2, 3]  # fresh: never an idle one


async def test_a_closed_response_is_freed_without_the_cyclic_gc(
    raw: RawFactory, client: Http1Transport
) -> None:
    """The parser refers back to its response: unless close() breaks that cycle, every
    exchange waits for the cyclic GC (which cost ~5% of the gateway's CPU per request)."""
    up = await raw(lambda _: OK)
    gc.disable()
    try:
        response = await client.send(req(up.origin))
        assert await response.read() == b"ok"
        response.close()
        sent = weakref.ref(response)
        response = await started(client, req(up.origin))
        response.close()
        told = weakref.ref(response)
        del response
        assert sent() is None and told() is None
    finally:
        gc.enable()


async def test_started_exchanges_leave_no_deadline_behind(
    raw: RawFactory, client: Http1Transport
) -> None:
    """`start` times exchanges out with one sweep per pool, not a loop timer each: whatever
    ends - answered, failed or closed unanswered - leaves the watch list."""
    up = await raw(lambda seen: "hang" if seen.target == "/slow" else OK)
    await fetch(client, req(up.origin))
    pool = client._pools[("svc", up.origin)]
    for _ in range(3):
        response = await started(client, req(up.origin))
        assert response.whole_body() == b"ok"
        response.close()
    assert pool.watched == {}
    hung = client.start(req(up.origin, target="/slow", timeout=5.0), lambda _r: None)
    assert hung is not None and list(pool.watched) == [hung]
    hung.close()  # the caller gave up (its client went away): no deadline left to run
    assert pool.watched == {}
    stopped = "the sweep to stop once nothing is watched"
    await wait_until_async(lambda: pool._sweeper is None, DEADLINE, stopped, interval=0.01)
