"""The gateway's default upstream client: pooled keep-alive HTTP/1.1 on asyncio + httptools.

Why not aiohttp's `ClientSession`: per request it builds a request object, a response object,
a timer context, a stream reader and several header multidicts, which costs more CPU than the
whole rest of the gateway. This client keeps what a reverse proxy needs and nothing else: one
asyncio Protocol per connection, the llhttp parser (httptools) per exchange, one write per
request when the body is already in memory, and a LIFO stack of idle connections per upstream
instance.

Behaviour (the `gateway.transport` contract, plus):

* Keep-alive: a connection goes back to its pool only when the response was read to its end,
  the request body was sent whole, and the upstream did not ask to close (`Connection: close`,
  HTTP/1.0 without keep-alive, a body delimited by EOF). Idle connections older than
  `keepalive_timeout` are closed, not reused; ones the upstream closed are dropped at once.
* Bodies: bytes are sent with `Content-Length`; an async iterable is streamed raw when the
  caller gave a `Content-Length`, chunked otherwise. Responses may use either framing, or EOF.
  HEAD, 1xx, 204 and 304 responses carry no body.
* A connection reset (or closed) before any response byte, on a connection that had served
  requests before, is retried once on a new connection - only for idempotent methods with a
  replayable body. Everything else surfaces as `UpstreamUnavailable`.
* At most `pool_size` connections per upstream instance; a request finding them all busy
  waits up to `pool_timeout` (and never past its own timeout) for one, else `PoolTimeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl as ssl_module
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import httptools
from multidict import CIMultiDict, CIMultiDictProxy

from .transport import (
    Headers,
    NotSent,
    OutboundRequest,
    PoolTimeout,
    Transport,
    TransportError,
    UpstreamResponse,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from .writes import batch_for

__all__ = ["Http1Transport"]

_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
_BODY_EXPECTED = frozenset({"POST", "PUT", "PATCH"})
_FRAMING = frozenset({"host", "content-length", "transfer-encoding", "connection"})
_HIGH_WATER = 256 * 1024  # buffered response bytes above which the socket stops being read
_MAX_HEADER_BYTES = 64 * 1024
_MAX_HEADERS = 200
_JOIN_BELOW = 64 * 1024  # head and in-memory body are sent as one buffer below this size
_SWEEP_EVERY = 0.01  # seconds between checks of `start`'s deadlines (while any is pending)


class _Stale(UpstreamUnavailable):
    """A reused connection died before the upstream sent a byte: safe to replay once (for an
    idempotent request; any other gets this as its 502)."""

    def __init__(self, origin: str = "the upstream") -> None:
        super().__init__(f"{origin} reset a kept-alive connection")


def _expire(fut: asyncio.Future[Any], message: str) -> None:
    if not fut.done():
        fut.set_exception(UpstreamTimeout(message))


def _expire_head(fut: asyncio.Future[Any], origin: str) -> None:
    _expire(fut, f"no response from {origin} in time")


# --- one connection ------------------------------------------------------------------------


class _Connection(asyncio.Protocol):
    __slots__ = (
        "_drain",
        "closed",
        "idle_since",
        "pool",
        "response",
        "slot_held",
        "transport",
        "used",
    )

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.response: _Response | None = None
        self.closed = False
        self.slot_held = True  # counted in pool.count until freed exactly once
        self.used = 0  # exchanges started on this connection
        self.idle_since = 0.0
        self._drain: asyncio.Future[None] | None = None

    # asyncio callbacks
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            # small requests go out at once (asyncio and uvloop set it too; say so anyway)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:  # bytes nobody asked for: the stream is out of step
            self.abort()
            return
        try:
            response.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            response.fail(UpstreamUnavailable("the upstream switched protocols unasked"))
            self.abort()
        except httptools.HttpParserError as exc:
            if not response.done:
                response.fail(UpstreamUnavailable(f"invalid HTTP response: {exc}"))
            response.reusable = False
            self.abort()
        if response.notify is not None and response._head is not None:
            response._tell()  # last: the callback may reuse this connection at once

    def eof_received(self) -> bool | None:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        response = self.response
        if response is not None:
            response.lost(exc)
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)
        self.pool.lost(self)

    def pause_writing(self) -> None:
        if self._drain is None or self._drain.done():
            self._drain = self.pool.loop.create_future()

    def resume_writing(self) -> None:
        drain = self._drain
        if drain is not None and not drain.done():
            drain.set_result(None)

    async def drain(self) -> None:
        drain = self._drain
        if drain is not None and not drain.done():
            await drain
        if self.closed:
            raise UpstreamUnavailable("the upstream closed the connection while receiving")

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()


# --- one response --------------------------------------------------------------------------


class _Response(UpstreamResponse):
    """One exchange's parser callbacks and body buffer; it owns its connection until close()."""

    __slots__ = (
        "_buffered",
        "_chunks",
        "_conn",
        "_deadline",
        "_eof_body",
        "_error",
        "_head",
        "_head_waiter",
        "_header_bytes",
        "_headers",
        "_interim",
        "_paused",
        "_raw",
        "_skip_body",
        "_timeout",
        "_unbounded",
        "_waiter",
        "content_length",
        "done",
        "got_bytes",
        "keep_alive",
        "notify",
        "parser",
        "reason",
        "reusable",
        "sent",
        "status",
    )

    def __init__(self, conn: _Connection, skip_body: bool, timeout: float) -> None:
        self._conn: _Connection | None = conn
        self.parser = httptools.HttpResponseParser(self)
        self._skip_body = skip_body
        self._timeout = timeout
        # The head's outcome: None until known, then True or the exception that stands for it.
        # A future only for a caller that awaits it (`send`): `start`'s callers never do.
        self._head: bool | BaseException | None = None
        self._head_waiter: asyncio.Future[None] | None = None
        self._raw: list[tuple[bytes, bytes]] = []  # as received: decoded only when asked
        self._headers: CIMultiDictProxy[str] | None = None
        self._header_bytes = 0
        self._interim = False
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._unbounded = False
        self._waiter: asyncio.Future[None] | None = None
        self._error: TransportError | None = None
        self._eof_body = False
        self.status = 0
        self.reason = ""
        self.content_length: int | None = None
        self.got_bytes = False
        self.done = False  # the whole response is in
        self.keep_alive = False
        self.reusable = True
        self.sent = False  # the whole request was written
        # `Http1Transport.start`'s callback and its arguments, called once with the response
        # when its head is in (the body too, if it came with it) or the exchange failed
        self.notify: tuple[Callable[..., None], tuple[Any, ...]] | None = None
        self._deadline: float | None = None  # while `start`'s pool watches it (`_Pool.sweep`)

    @property
    def headers(self) -> CIMultiDictProxy[str]:  # type: ignore[override]
        headers = self._headers
        if headers is None:
            headers = self._headers = CIMultiDictProxy(CIMultiDict(self.raw_headers))
        return headers

    @property
    def stale(self) -> bool:
        """The kept-alive connection died before the upstream's first byte."""
        return isinstance(self._head, _Stale)

    def failure(self) -> BaseException | None:
        """Why there is no response head, once there is an outcome (`start`'s callback)."""
        head = self._head
        return head if isinstance(head, BaseException) else None

    def whole_body(self) -> bytes | None:
        """The whole body, without an await, if all of it is in and nothing failed."""
        if not self.done or self._error is not None:
            return None
        return self._take() if self._chunks else b""

    def _tell(self) -> None:
        notify, self.notify = self.notify, None
        self._unwatch()
        if notify is not None:
            notify[0](*notify[1], self)

    def _unwatch(self) -> None:
        if self._deadline is not None:
            self._deadline = None
            conn = self._conn
            if conn is not None:
                conn.pool.watched.pop(self, None)

    def _time_out(self, origin: str) -> None:
        self.fail(UpstreamTimeout(f"no response from {origin} in time"))
        self._tell()

    @property
    def raw_headers(self) -> list[tuple[str, str]]:
        """The response's fields in order, as (name, value) text."""
        return [
            (name.decode("latin-1"), value.decode("utf-8", "surrogateescape"))
            for name, value in self._raw
        ]

    @property
    def header_fields(self) -> list[tuple[bytes, bytes]]:
        """The response's fields in order, as received: what the front server relays (never
        decoded and encoded again on the way through)."""
        return self._raw

    # parser callbacks (httptools calls them from data_received)
    def on_message_begin(self) -> None:
        self.got_bytes = True
        if self.done:  # a second response to one request: never trust this connection again
            raise ValueError("unexpected data after the response")

    def on_status(self, status: bytes) -> None:
        self.reason += status.decode("latin-1")

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value)
        if self._header_bytes > _MAX_HEADER_BYTES or len(self._raw) >= _MAX_HEADERS:
            raise ValueError("response headers too large")
        if len(name) == 14 and name.lower() == b"content-length":
            self.content_length = int(value)
        self._raw.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if status < 200:  # 100 Continue, 103 Early Hints: not the answer, wait for it
            self._interim = True
            self._raw = []
            self.reason = ""
            self.content_length = None
            return
        self.status = status
        self._headers = None  # built when asked for
        if self._skip_body or status == 204 or status == 304:
            self.content_length = 0
            if self._skip_body:
                self._finish(self.parser.should_keep_alive())
        elif self.content_length is None:
            te = next((v for k, v in self._raw if k.lower() == b"transfer-encoding"), None)
            self._eof_body = te is None or b"chunked" not in te.lower()
        self._set_head(True)

    def on_body(self, body: bytes) -> None:
        if self.done:
            return
        self._chunks.append(body)
        self._buffered += len(body)
        if self._buffered > _HIGH_WATER and not self._paused and not self._unbounded:
            conn = self._conn
            if conn is not None and conn.transport is not None:
                self._paused = True
                conn.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        if not self.done:
            self._finish(self.parser.should_keep_alive())

    # connection events
    def _finish(self, keep_alive: bool) -> None:
        self.done = True
        self.keep_alive = keep_alive
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def fail(self, error: TransportError) -> None:
        if self._error is None:
            self._error = error
        self._set_head(error)
        self._wake()

    def _set_head(self, outcome: bool | BaseException) -> None:
        if self._head is None:
            self._head = outcome
            waiter = self._head_waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)

    def lost(self, exc: Exception | None) -> None:
        self.reusable = False
        if self.done:
            return
        if not self.status:  # no answer yet
            if self._head is None:
                conn = self._conn
                if not self.got_bytes and conn is not None and conn.used > 1:
                    self._set_head(_Stale(conn.pool.origin))
                else:
                    reason = f": {exc}" if exc else ""
                    self.fail(UpstreamUnavailable(f"the upstream closed the connection{reason}"))
            if self.notify is not None:
                self._tell()
            return
        if self._eof_body and exc is None:
            self._finish(False)  # a body delimited by the end of the connection
        else:
            self.fail(UpstreamUnavailable("the upstream broke off its body"))

    async def _wait_data(self) -> None:
        loop = asyncio.get_running_loop()
        waiter = self._waiter = loop.create_future()
        timer = loop.call_later(
            self._timeout, _expire, waiter, "the upstream stalled while sending its body"
        )
        try:
            await waiter
        except UpstreamTimeout as exc:
            self._error = exc
            raise
        finally:
            timer.cancel()
            self._waiter = None

    def _take(self) -> bytes:
        chunks = self._chunks
        chunk = chunks.popleft() if len(chunks) == 1 else b"".join(chunks)
        chunks.clear()
        self._buffered = 0
        if self._paused:
            self._paused = False
            conn = self._conn
            if conn is not None and conn.transport is not None and not conn.closed:
                conn.transport.resume_reading()
        return chunk

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        while True:
            if self._chunks:
                yield self._take()
            elif self._error is not None:
                raise self._error
            elif self.done:
                return
            else:
                await self._wait_data()

    async def read(self) -> bytes:
        if not self.done and self._error is None:
            self._unbounded = True  # the caller wants it all: no back-pressure
            if self._paused:
                self._paused = False
                conn = self._conn
                if conn is not None and conn.transport is not None and not conn.closed:
                    conn.transport.resume_reading()
            while not self.done and self._error is None:
                await self._wait_data()
        if self._error is not None:
            raise self._error
        if not self._chunks:
            return b""
        return self._take()

    def close(self) -> None:
        conn = self._conn
        if conn is None:
            return
        self._unwatch()
        self._conn = None
        conn.response = None
        # The parser refers back to this response: drop it, or every exchange is a reference
        # cycle that only the cyclic GC frees (it was ~5% of the gateway's instructions).
        del self.parser
        self.notify = None
        if self._paused and not conn.closed and conn.transport is not None:
            conn.transport.resume_reading()
        if self.done and self.keep_alive and self.sent and self.reusable and self._error is None:
            conn.pool.release(conn)
        else:
            conn.pool.discard(conn)


# --- the pool of one upstream instance -----------------------------------------------------


class _Pool:
    def __init__(
        self,
        name: str,
        origin: str,
        *,
        limit: int,
        keepalive: float,
        pool_timeout: float,
    ) -> None:
        parts = urlsplit(origin)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UpstreamUnavailable(f"cannot reach {origin!r}: not an http(s) origin")
        self.name = name
        self.origin = origin
        self.host = parts.hostname
        self.port = parts.port or (443 if parts.scheme == "https" else 80)
        self.ssl: ssl_module.SSLContext | None = (
            ssl_module.create_default_context() if parts.scheme == "https" else None
        )
        self.host_header = parts.netloc
        self.limit = limit
        self.keepalive = keepalive
        self.pool_timeout = pool_timeout
        self.loop = asyncio.get_running_loop()
        self.writes = batch_for(self.loop)
        self.idle: list[_Connection] = []  # LIFO: the warmest connection first
        self.count = 0  # open or opening connections, idle ones included
        self.waiters: deque[asyncio.Future[_Connection | None]] = deque()
        self.connections: set[_Connection] = set()
        self.closed = False
        # `start`'s exchanges and their deadlines, checked every _SWEEP_EVERY by one timer
        self.watched: dict[_Response, None] = {}
        self._sweeper: asyncio.TimerHandle | None = None

    def watch(self, response: _Response, timeout: float) -> None:
        """Time `response` out after `timeout` (within _SWEEP_EVERY more). Why not a loop
        timer each: `call_at` + `cancel` cost ~0.8 us on uvloop, a dict entry ~0.1 us, and the
        exchanges one pool has in flight at a time are at most its connections."""
        response._deadline = self.loop.time() + timeout
        self.watched[response] = None
        if self._sweeper is None:
            self._sweeper = self.loop.call_later(_SWEEP_EVERY, self.sweep)

    def sweep(self) -> None:
        self._sweeper = None
        now = self.loop.time()
        late = [r for r in self.watched if r._deadline is not None and r._deadline <= now]
        for response in late:
            response._time_out(self.origin)  # it tells its caller, and is no longer watched
        if self.watched and self._sweeper is None and not self.closed:
            self._sweeper = self.loop.call_later(_SWEEP_EVERY, self.sweep)

    def take_idle(self) -> _Connection | None:
        """The most recently used idle connection still worth using, if any (no await)."""
        idle = self.idle
        while idle:
            conn = idle.pop()
            if conn.closed:
                continue
            if self.loop.time() - conn.idle_since > self.keepalive:
                self.discard(conn)
                continue
            return conn
        return None

    async def acquire(self, deadline: float, *, fresh: bool = False) -> _Connection:
        """An idle connection, else a new one within the limit, else wait for one.

        `fresh` (the replay after a stale connection) skips the idle ones: the upstream may
        have restarted and dropped them all. At the limit it closes the oldest idle one.
        """
        idle = self.idle
        if fresh:
            if self.count >= self.limit and idle:
                self.discard(idle.pop(0))
            if self.count < self.limit:
                self.count += 1
                return await self.open(deadline)
        else:
            conn = self.take_idle()
            if conn is not None:
                return conn
        if self.closed:
            raise UpstreamUnavailable("the transport is closed")
        if self.count < self.limit:
            self.count += 1
            return await self.open(deadline)
        return await self._wait(deadline)

    async def _wait(self, deadline: float) -> _Connection:
        fut: asyncio.Future[_Connection | None] = self.loop.create_future()
        self.waiters.append(fut)
        until = min(deadline, self.loop.time() + self.pool_timeout)
        try:
            async with asyncio.timeout_at(until):
                conn = await fut
        except BaseException as exc:
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                handed = fut.result()  # handed over just as we gave up: pass it on
                if handed is None:
                    self.free_slot()
                else:
                    self.release(handed)
            else:
                fut.cancel()
            if isinstance(exc, TimeoutError):
                raise PoolTimeout(
                    f"all {self.limit} connections to {self.origin} stayed busy"
                ) from None
            raise
        if conn is None:  # a slot was handed over, not a connection
            return await self.open(deadline)
        return conn

    async def open(self, deadline: float) -> _Connection:
        """A new connection on a slot the caller already holds (freed here on failure)."""
        try:
            async with asyncio.timeout_at(deadline):
                transport, conn = await self.loop.create_connection(
                    lambda: _Connection(self),
                    self.host,
                    self.port,
                    ssl=self.ssl,
                    server_hostname=self.host if self.ssl else None,
                )
        except TimeoutError:
            self.free_slot()
            raise UpstreamTimeout(f"no connection to {self.origin} in time") from None
        except OSError as exc:
            self.free_slot()
            raise NotSent(f"{self.origin} is unreachable: {exc}") from None
        except BaseException:
            self.free_slot()
            raise
        conn.transport = transport  # uvloop may resolve before calling connection_made
        if self.closed:
            conn.slot_held = False
            conn.abort()
            raise UpstreamUnavailable("the transport is closed")
        self.connections.add(conn)
        return conn

    def free_slot(self) -> None:
        """One connection fewer: a waiter may now open its own."""
        waiters = self.waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(None)  # the slot passes to the waiter: count unchanged
                return
        self.count -= 1

    def release(self, conn: _Connection) -> None:
        if conn.closed or self.closed:
            self.discard(conn)
            return
        waiters = self.waiters
        while waiters:
            fut = waiters.popleft()
            if not fut.done():
                fut.set_result(conn)
                return
        conn.idle_since = self.loop.time()
        self.idle.append(conn)

    def discard(self, conn: _Connection) -> None:
        if not conn.closed:
            conn.abort()
        self.lost(conn)

    def lost(self, conn: _Connection) -> None:
        self.connections.discard(conn)
        if conn.slot_held:
            conn.slot_held = False
            self.free_slot()
        if conn.response is None:  # idle: drop it from the stack
            idle = self.idle
            if conn in idle:
                idle.remove(conn)

    def close(self) -> None:
        self.closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for conn in list(self.connections):
            conn.abort()
        self.idle.clear()
        while self.waiters:
            fut = self.waiters.popleft()
            if not fut.done():
                fut.set_exception(UpstreamUnavailable("the transport is closed"))


# --- the transport -------------------------------------------------------------------------


_is_framing: dict[str, bool] = {}  # per header name as spelt: one of _FRAMING or not


def _head(request: OutboundRequest, host: str, framing: str) -> bytes:
    """The request line and headers; our own Host and framing replace the caller's."""
    headers = request.headers
    if isinstance(headers, list):  # the front server's fields: names decided once each
        lines = []
        for name, value in headers:
            ours = _is_framing.get(name)
            if ours is None:
                ours = name.lower() in _FRAMING
                if len(_is_framing) < 1024:
                    _is_framing[name] = ours
            if not ours:
                lines.append(f"{name}: {value}\r\n")
    elif isinstance(headers, CIMultiDict | CIMultiDictProxy) and not (
        "Host" in headers
        or "Content-Length" in headers
        or "Transfer-Encoding" in headers
        or "Connection" in headers
    ):
        lines = [f"{k}: {v}\r\n" for k, v in headers.items()]
    else:
        lines = [f"{k}: {v}\r\n" for k, v in headers.items() if k.lower() not in _FRAMING]
    text = f"{request.method} {request.target} HTTP/1.1\r\nHost: {host}\r\n{''.join(lines)}"
    text += framing + "\r\n" if framing else "\r\n"
    expected = len(lines) + (4 if framing else 3)  # request line, Host, blank line
    if text.count("\n") != expected or text.count("\r") != expected or " " in request.target:
        raise UpstreamUnavailable("refusing to send a header or target with a line break")
    return text.encode("utf-8", "surrogateescape")


def _framing(method: str, body: bytes | None) -> str:
    """The framing field of a request whose body (if any) is all in memory."""
    if body is None:
        return "Content-Length: 0\r\n" if method in _BODY_EXPECTED else ""
    return f"Content-Length: {len(body)}\r\n"


def _write_whole(transport: asyncio.Transport, head: bytes, body: bytes | None) -> None:
    """Head and an in-memory body, in one write below _JOIN_BELOW."""
    if body is None:
        transport.write(head)
    elif len(body) < _JOIN_BELOW:
        transport.write(head + body)
    else:
        transport.writelines((head, body))


def _stream_length(headers: Headers) -> int | None:
    """The caller's Content-Length for a streamed body (None: send it chunked)."""
    for name, value in headers if isinstance(headers, list) else headers.items():
        if name.lower() == "content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class Http1Transport(Transport):
    """Keep-alive HTTP/1.1 connection pools, one per (pool name, upstream instance)."""

    def __init__(
        self,
        pool_sizes: Mapping[str, int] | None = None,
        *,
        default_pool_size: int = 10,
        keepalive_timeout: float = 15.0,
        pool_timeout: float = 5.0,
    ) -> None:
        self._pool_sizes = dict(pool_sizes or {})
        self._default_pool_size = default_pool_size
        self._keepalive = keepalive_timeout
        self._pool_timeout = pool_timeout
        self._pools: dict[tuple[str, str], _Pool] = {}

    def _pool(self, request: OutboundRequest) -> _Pool:
        key = (request.pool, request.origin)
        pool = self._pools.get(key)
        if pool is None:
            pool = self._pools[key] = _Pool(
                request.pool,
                request.origin,
                limit=self._pool_sizes.get(request.pool, self._default_pool_size),
                keepalive=self._keepalive,
                pool_timeout=self._pool_timeout,
            )
        return pool

    def start(
        self, request: OutboundRequest, callback: Callable[..., None], *args: Any
    ) -> _Response | None:
        """Write `request` now, on an idle kept-alive connection, and return its response;
        `callback(*args, response)` is called once, from the event loop, when the response's
        head is in (its body too, if it came along: `whole_body()`) or the exchange failed
        (`failure()`; a `stale` one may be replayed with `send(..., fresh=True)`).

        None - nothing sent - when no idle connection is at hand or the body is streamed:
        `send` then. Why: a request answered from callbacks needs no task, no coroutine
        frames and no future per request, which is most of what the wait costs.
        """
        pool = self._pools.get((request.pool, request.origin))
        body = request.body
        if pool is None or not (body is None or isinstance(body, bytes)):
            return None
        conn = pool.take_idle()
        if conn is None:
            return None
        head = _head(request, pool.host_header, _framing(request.method, body))
        response = _Response(conn, request.method == "HEAD", request.timeout)
        conn.used += 1
        conn.response = response
        assert conn.transport is not None
        if body is None:  # written at the end of this loop turn, with the others (writes.py)
            pool.writes.write(conn.transport, head)
        elif len(body) < _JOIN_BELOW:
            pool.writes.write(conn.transport, head + body)
        else:
            pool.writes.flush()
            _write_whole(conn.transport, head, body)
        response.sent = True
        response.notify = (callback, args)
        pool.watch(response, request.timeout)
        return response

    async def send(self, request: OutboundRequest, *, fresh: bool = False) -> UpstreamResponse:
        """The `Transport` contract; `fresh` skips the idle connections (a replay after a
        stale one, see `start`)."""
        # One coroutine from the pool to the response head (no nested frames): every await
        # level costs twice per request, on suspension and on resumption.
        pool = self._pools.get((request.pool, request.origin)) or self._pool(request)
        loop = pool.loop
        deadline = loop.time() + request.timeout
        body = request.body
        if body is None or isinstance(body, bytes):
            framing = _framing(request.method, body)
        else:
            length = _stream_length(request.headers)
            framing = (
                "Transfer-Encoding: chunked\r\n"
                if length is None
                else f"Content-Length: {length}\r\n"
            )
        head = _head(request, pool.host_header, framing)
        chunked = framing.startswith("Transfer-Encoding")
        while True:
            conn = None if fresh else pool.take_idle()
            if conn is None:
                conn = await pool.acquire(deadline, fresh=fresh)
            response = _Response(conn, request.method == "HEAD", request.timeout)
            try:
                if conn.closed:  # handed over by a waiter's release, then closed upstream
                    if conn.used:
                        raise _Stale
                    raise UpstreamUnavailable(f"{request.origin} closed the connection at once")
                conn.used += 1
                conn.response = response
                transport = conn.transport
                assert transport is not None
                if body is None or isinstance(body, bytes):
                    _write_whole(transport, head, body)
                    response.sent = True
                else:
                    transport.write(head)
                    await _stream(conn, response, body, chunked, deadline, request.origin)
                if response._head is None:
                    answer = response._head_waiter = loop.create_future()
                    timer = loop.call_at(deadline, _expire_head, answer, request.origin)
                    try:
                        await answer
                    finally:
                        timer.cancel()
                        response._head_waiter = None
                if isinstance(response._head, BaseException):
                    raise response._head
            except _Stale:
                response.reusable = False
                response.close()
                if fresh:  # pragma: no cover - a fresh connection is never stale
                    raise UpstreamUnavailable(f"{request.origin} reset the connection") from None
                if request.method not in _IDEMPOTENT or not isinstance(body, bytes | None):
                    raise UpstreamUnavailable(
                        f"{request.origin} reset a kept-alive connection"
                    ) from None
                fresh = True  # the reused connection was dead: once more, on a new one
                continue
            except BaseException:
                response.reusable = False
                response.close()
                raise
            return response

    async def close(self) -> None:
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            pool.close()

    def replace_pool(self, pool: str, size: int) -> Callable[[], Awaitable[None]]:
        self._pool_sizes[pool] = size
        detached = [self._pools.pop(key) for key in list(self._pools) if key[0] == pool]

        async def close() -> None:
            for old in detached:
                old.close()

        return close


async def _stream(
    conn: _Connection,
    response: _Response,
    body: AsyncIterable[bytes],
    chunked: bool,
    deadline: float,
    origin: str,
) -> None:
    """Send an async body as it is produced; stop early if the upstream already answered."""
    transport = conn.transport
    assert transport is not None
    iterator = aiter(body)
    try:
        async with asyncio.timeout_at(deadline):
            while True:
                try:
                    chunk = await anext(iterator)
                except StopAsyncIteration:
                    break
                except TransportError:
                    raise
                except Exception as exc:
                    raise UpstreamUnavailable(f"the request body failed: {exc!r}") from exc
                if response.done or conn.closed:
                    return  # answered (or gone) before the body was in: never reuse
                if not chunk:
                    continue
                if chunked:
                    transport.writelines((b"%x\r\n" % len(chunk), chunk, b"\r\n"))
                else:
                    transport.write(chunk)
                await conn.drain()
            if chunked:
                transport.write(b"0\r\n\r\n")
    except TimeoutError:
        raise UpstreamTimeout(f"{origin} did not take the request body in time") from None
    response.sent = True
