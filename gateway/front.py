"""The gateway's HTTP/1.1 front server: httptools parsing, the pipeline, one write.

Why it exists: aiohttp's server and response machinery were about half of the gateway's CPU
per proxied request (tests/bench/README.md has the profile). This server parses requests into
`Exchange`s (its `_Request` is one), runs them through the same pipeline as the aiohttp
application (`Pipeline.start`: route, CORS, auth, rate limit, body limits, custom policies,
forwarding, forward or aggregate; ADR 0016) and writes the chain's answer, with the same
access line and metrics (`chassis.access`) and the same problem documents.

Requests it does not parse itself - the gateway's own endpoints (health, metrics, OpenAPI,
docs), chunked or large uploads, `Upgrade` / `Expect`, HTTP/1.0, oversized heads - are handed
over with their connection to the same aiohttp application (its `RequestHandler` gets the
transport and the request's bytes), which answers with `Connection: close`, so the client's
next request starts on this server again.

Answering (ADR 0006, written once in `gateway.pipeline.chain`): the chain runs inline while
every step answers at once; the forward step writes the request upstream on an idle kept-alive
connection (`Http1Transport.start`) and the answer is written from that connection's callback
(`_answered`); a Redis limit's reply calls back the same way. A step that must wait (a token to
verify, a balanced upstream, a stale connection to replay) moves the rest into a task.

Parsing: the buffer always starts at the first byte of the request being parsed, and a request
answered here has no body or a known-length one, so where it ends is known without the parser;
a request that begins while one is being answered (pipelining) stops the parser and is parsed
again, by a fresh parser, after that answer. A request is answered only after the parser has
returned, never from inside its callbacks, so an answer given at once (a 429) cannot feed the
parser from within itself (ADR 0013). Heads the gateway and a service could read two ways (two
`Authorization` or `Host` fields, no `Host`, a fragment) are refused first (`gateway.strict`).

Timeouts: an idle keep-alive connection is closed after `idle_timeout`, a request whose head
is not all in `head_timeout` after its first byte too, however it trickles (a slowloris cannot
keep a connection by sending a byte now and then); a body not all in within its route's
`body_timeout` of the request's first byte gets a 408 problem and the connection closes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from email.utils import formatdate
from http import HTTPStatus
from typing import Any
from urllib.parse import unquote

import httptools
import orjson
from aiohttp import web

from chassis import REQUEST_ID_HEADER, Problem
from chassis.access import record_request
from chassis.aiohttp import METRICS
from chassis.logging import accept_request_id, correlation_id
from chassis.problems import PROBLEM_JSON

from . import strict
from .pipeline.body_limits import READ_WHOLE_REQUEST as _READ_WHOLE_REQUEST
from .pipeline.body_limits import body_late
from .pipeline.exchange import Exchange
from .pipeline.forwarding import (
    response_head_block,
    response_header_fields,
    response_headers,
)
from .pipeline.policy import Answer
from .pipeline.stream import Streams, streams_of
from .proxy import read_whole
from .reload import MAX_FIELD_SIZE, MAX_HEADER_BYTES, Inflight, StateHolder
from .transport import TransportError, UpstreamResponse
from .writes import WriteBatch, batch_for

__all__ = ["FrontServer"]

log = logging.getLogger("portico.gateway.front")
http_log = logging.getLogger("portico.http")

_READ_WHOLE_RESPONSE = 256 * 1024
_FAST_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
_NO_BODY_STATUS = frozenset({204, 304})
_REASONS = {s.value: s.phrase for s in HTTPStatus}
# Buffered bytes past which reading pauses while an answer is being written.
_MAX_BUFFER = _READ_WHOLE_REQUEST + MAX_HEADER_BYTES
_CRLF = frozenset(b"\r\n")
# On stop: how long a kept-alive connection idle at that moment may still bring a request,
# answered with `Connection: close` (gunicorn's STOP_KEEPALIVE_LINGER is the same 2 s).
IDLE_LINGER = 2.0
_REQUEST_ID_FIELD = REQUEST_ID_HEADER.encode()
_status_lines: dict[tuple[int, str], bytes] = {}  # "HTTP/1.1 200 OK\r\n", by status and reason


class _Cold(Exception):
    """This request is aiohttp's to answer."""


class _Next(Exception):
    """A pipelined request began while the previous one is still being answered."""


class _Refused(Exception):
    """The request's head breaks a rule of `gateway.strict`: a 400 problem, then close."""


# `_Request`'s starting values, in its __init__'s order. `cold`: something makes the request
# aiohttp's (see on_header); `refused`: a field given twice (see gateway.strict); `answered`:
# the status line is out, too late for a problem.
_BLANK = (
    *("", "", "", None, None, None, None, None, "http", None, None, 0),  # the request
    *("", None, None, None, 0, None, None, None, None, None, None, None),  # decided
    *(None, None, 0, None, True, 0.0, None, None),  # the answer
    *(0, False, None, False, 0, None),  # the parser's and the connection's
)


class _Request(Exchange):
    """An `Exchange` with what the parser and the connection need besides."""

    url: bytes
    head_bytes: int
    cold: bool
    refused: Problem | None
    answered: bool
    body_parts: list[bytes]
    end: int
    inflight: Inflight | None

    __slots__ = (
        "answered",
        "body_parts",
        "cold",
        "end",
        "head_bytes",
        "inflight",
        "refused",
        "url",
    )

    def __init__(self) -> None:
        # Every slot set here, not by `Exchange.__init__`, and from one tuple: one of these is
        # made per request, and a call with fifteen keywords, or a store per line, cost more
        # bytecodes than anything else the front adds (tests/unit/gateway/test_front_request.py
        # checks no slot is left unset and the values are an Exchange's).
        (
            self.method,
            self.target,
            self.path,
            self.authorization,
            self.host,
            self.request_id,
            self.origin,
            self.remote,
            self.scheme,
            self.body,
            self.body_stream,
            self.content_length,
            self.rid,
            self.route,
            self.params,
            self.chain,
            self.step,
            self.claims,
            self.consumer,
            self.rate,
            self.upstream_headers,
            self.outbound,
            self.fields,
            self.vars,
            self.answer,
            self.response,
            self.status,
            self.response_drop,
            self.keep_alive,
            self.started,
            self.server,
            self.done,
            self.head_bytes,
            self.cold,
            self.refused,
            self.answered,
            self.end,
            self.inflight,
        ) = _BLANK
        self.headers = []
        self.forwarded_for = []
        self.response_extra = []
        self.body_parts = []
        self.url = b""


# Headers whose presence hands the request to aiohttp: protocol switches, 100-continue, chunks.
_COLD_HEADERS = frozenset({b"upgrade", b"expect", b"transfer-encoding"})


class FrontServer:
    """Serve `app` (the gateway's aiohttp application) behind the fast path on one socket."""

    def __init__(
        self,
        app: web.Application,
        holder: StateHolder,
        *,
        idle_timeout: float = 75.0,
        head_timeout: float = 60.0,
        shutdown_timeout: float = 10.0,
    ) -> None:
        self.app = app
        self.holder = holder
        self.idle_timeout = idle_timeout
        self.head_timeout = head_timeout
        self.shutdown_timeout = shutdown_timeout
        self.connections: set[_Connection] = set()
        self.closing = False  # answers close their connection (draining, then stopping)
        self.refusing = False  # stopping: a connection accepted now is closed at once
        self.runner: web.AppRunner | None = None
        self.handover: Callable[[], asyncio.Protocol] | None = None
        self.own_path: Callable[[str], bool] = lambda _path: False
        self.metrics = app[METRICS]
        self._server: asyncio.Server | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._empty: asyncio.Event | None = None
        self._date = (b"", 0)
        self.loop: asyncio.AbstractEventLoop | None = None
        self.writes: WriteBatch | None = None  # answers of one loop turn, sent at its end

        async def close_handed_over(_request: web.Request, response: web.StreamResponse) -> None:
            # Every request aiohttp sees came through a hand-over: its connection goes back to
            # the client afterwards, whose next request then starts on the fast path.
            if response.status == 101:
                return  # a WebSocket (ADR 0035): the connection is the socket's until it ends
            response.force_close()
            response.headers["Connection"] = "close"

        app.on_response_prepare.append(close_handed_over)

    @property
    def sockets(self) -> list[socket.socket]:
        return list(self._server.sockets) if self._server is not None else []

    async def start(self, host: str, port: int, *, reuse_port: bool = False) -> None:
        """Run the application's start-up, then listen on host:port (port 0: a free one)."""
        self.loop = asyncio.get_running_loop()
        self.writes = batch_for(self.loop)
        self.runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self.runner.setup()
        server = self.runner.server
        assert server is not None
        self.handover = strict.handlers(server)  # its parser's refusals in problem+json too
        self.own_path = _own_paths(
            self.app, streams_of(self.holder.state.pipeline.context.resources)
        )
        self._server = await self.loop.create_server(
            lambda: _Connection(self),
            host,
            port,
            reuse_address=True,
            reuse_port=reuse_port or None,
            backlog=1024,
        )
        self._sweeper = self.loop.create_task(self._sweep())

    def linger(self) -> None:
        """Draining (`chassis.drain`): still accepting, but every answer closes its connection
        with `Connection: close`, so keep-alive peers (nginx) move to another replica between
        requests instead of racing the close of an idle connection later."""
        self.closing = True

    async def close(self) -> None:
        """Stop accepting, let answers in progress finish (bounded), then stop the app.

        A kept-alive connection idle now is not closed at once: its peer may be sending a
        request on it this instant (a balancer's POST, which it cannot send again elsewhere).
        For `IDLE_LINGER` seconds a request on it is answered with `Connection: close`, as
        gunicorn does on its stop; then the connections still idle close. One that has not
        sent a byte yet is left its first request (Go's `Shutdown` treats new ones alike)."""
        self.closing = self.refusing = True
        if self._server is not None:
            self._server.close()
        if self.connections:
            self._empty = asyncio.Event()
            await self._wait_empty(min(IDLE_LINGER, self.shutdown_timeout))
            for conn in list(self.connections):
                if not conn.busy and conn.since:  # idle between requests all along
                    conn.close()
            await self._wait_empty(max(0.0, self.shutdown_timeout - IDLE_LINGER))
        for conn in list(self.connections):
            conn.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        if self.runner is not None:
            await self.runner.cleanup()  # handed-over connections, then the app's cleanup

    async def _wait_empty(self, within: float) -> None:
        empty = self._empty
        if empty is None or not self.connections or within <= 0:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                await empty.wait()

    def forget(self, conn: _Connection) -> None:
        self.connections.discard(conn)
        if not self.connections and self._empty is not None:
            self._empty.set()

    def date_field(self) -> bytes:
        """The `Date` field for answers whose upstream sent none (formatted once a second)."""
        now = int(time.time())
        if self._date[1] != now:
            self._date = (f"Date: {formatdate(now, usegmt=True)}\r\n".encode(), now)
        return self._date[0]

    async def _sweep(self) -> None:
        """Close idle keep-alive connections and those whose request never finishes arriving:
        a head not all in within `head_timeout` of its first byte is cut; a body not all in
        within its route's `body_timeout` of the request's first byte gets a 408 problem."""
        assert self.loop is not None
        while True:
            state = self.holder.state
            body = min((r.body_timeout for r in state.router.routes), default=self.head_timeout)
            await asyncio.sleep(max(0.05, min(self.idle_timeout, self.head_timeout, body) / 4))
            now = self.loop.time()
            for conn in list(self.connections):
                if conn.busy:
                    continue
                if conn.buf:  # a request arriving: the whole of it within head_timeout
                    conn.check_arrival(now - conn.since)
                elif now - conn.last > self.idle_timeout:
                    conn.close()


def _own_paths(app: web.Application, streams: Streams) -> Callable[[str], bool]:
    """True for paths the application itself answers (health, metrics, OpenAPI, docs,
    aggregates): every resource but the catch-alls; and the paths of streaming routes (SSE,
    WebSocket: ADR 0035), which aiohttp relays - a reload that changes those clears the
    cache, so other requests pay nothing for them."""
    exact: set[str] = set()
    prefixes: list[str] = []
    patterns: list[Any] = []
    for resource in app.router.resources():
        info = resource.get_info()
        if "path" in info:
            exact.add(info["path"])
        elif "prefix" in info:
            prefixes.append(info["prefix"].rstrip("/") + "/")
        elif "pattern" in info:
            if info.get("formatter") == "/{tail}":
                continue  # the proxy's (and CORS') catch-all: the fast path's own
            patterns.append(info["pattern"])
    cache: dict[str, bool] = {}
    streams.listeners.append(cache.clear)

    def own(path: str) -> bool:
        hit = cache.get(path)
        if hit is None:
            hit = (
                path in exact
                or any(path.startswith(p) for p in prefixes)
                or any(p.fullmatch(path) for p in patterns)
                or streams.streams_at(path)
            )
            if len(cache) >= 4096:
                cache.clear()
            cache[path] = hit
        return hit

    return own


class _Connection(asyncio.Protocol):
    """One client connection on the fast path (until a request is handed to aiohttp)."""

    __slots__ = (
        "_broken",
        "_complete",
        "_drain",
        "_fed",
        "_parsing",
        "_reading_paused",
        "_writing_paused",
        "buf",
        "busy",
        "front",
        "last",
        "parser",
        "remote",
        "req",
        "since",
        "transport",
    )

    def __init__(self, front: FrontServer) -> None:
        self.front = front
        self.transport: asyncio.Transport | None = None
        self.remote: str | None = None
        self.buf = bytearray()
        self.parser = httptools.HttpRequestParser(self)
        self.req: _Request | None = None
        self.busy = False
        self.last = 0.0
        self.since = 0.0  # when the request now arriving began to arrive
        self._fed = 0  # bytes of buf the current parser has seen
        self._broken = False  # the parser stopped inside a message: start a new one
        self._parsing = False  # `_parse` is running: whoever finishes a request leaves it to it
        self._complete: _Request | None = None  # parsed, to be answered once the parser is out
        self._reading_paused = False
        self._writing_paused = False
        self._drain: asyncio.Future[None] | None = None

    # --- asyncio.Protocol -------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        peer = transport.get_extra_info("peername")
        self.remote = peer[0] if isinstance(peer, tuple) else None
        front = self.front
        assert front.loop is not None
        self.last = front.loop.time()
        front.connections.add(self)
        if front.refusing:
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.front.forget(self)
        self._wake_writer()

    def data_received(self, data: bytes) -> None:
        front = self.front
        assert front.loop is not None
        now = self.last = front.loop.time()
        if not self.buf:
            self.since = now  # the first byte of a request: a slow sender cannot reset it
        self.buf += data
        if self.busy:
            if len(self.buf) > _MAX_BUFFER and not self._reading_paused:
                self._reading_paused = True
                if self.transport is not None:
                    self.transport.pause_reading()
            return
        self._parse()

    def eof_received(self) -> bool | None:
        return None  # close: a half-closed client gets no more answers

    def pause_writing(self) -> None:
        self._writing_paused = True

    def resume_writing(self) -> None:
        self._writing_paused = False
        self._wake_writer()

    def _wake_writer(self) -> None:
        drain, self._drain = self._drain, None
        if drain is not None and not drain.done():
            drain.set_result(None)

    async def _drained(self) -> None:
        if self._writing_paused and self.transport is not None:
            assert self.front.loop is not None
            self._drain = self.front.loop.create_future()
            await self._drain

    def close(self) -> None:
        if self.transport is not None:
            self._flush_writes()  # an answer held for the end of the turn goes out first
            self.transport.close()

    def _flush_writes(self) -> None:
        writes = self.front.writes
        if writes is not None:
            writes.flush()

    def check_arrival(self, waited: float) -> None:
        """The sweeper's check of a request still arriving, `waited` seconds after its first
        byte: a head late past `head_timeout` is cut; a body late past its route's body
        timeout is answered 408 (problem+json) and the connection closed."""
        req = self.req
        if req is None or not req.method:  # the head is not all in yet
            if waited > self.front.head_timeout:
                self.close()
            return
        state = self.front.holder.state
        try:
            route, _ = state.pipeline.resolve(req.method, req.target, req.path)
            timeout = route.body_timeout
        except Problem:
            route, timeout = None, self.front.head_timeout
        if waited <= timeout:
            return
        self.req = None
        problem = body_late(timeout)
        rid = accept_request_id(req.request_id)
        self._write(problem.status, *_problem_parts(problem, req.path, rid), close=True)
        self.close()
        token = correlation_id.set(rid)
        try:
            name = route.name if route is not None else "unmatched"
            record_request(
                self.front.metrics, req.method, name, req.path, problem.status, waited, None, None
            )
        finally:
            correlation_id.reset(token)

    # --- parsing ----------------------------------------------------------------------------

    def _parse(self) -> None:
        """Parse the buffer and answer the requests it holds, one at a time, in order.

        A request is answered only once the parser has returned (`_complete`): an answer given
        at once (a 429, a cached 4xx) then never runs inside a parser callback, so finishing
        it never feeds the parser again from within itself (issue 15: a re-entered parser
        sent the next request upstream and told its client 400). The loop goes on with the
        next request while answers come at once; one that waits leaves the rest to `_done`.
        """
        if self._parsing:
            return  # an answer given inside the loop below: the loop takes the next request
        self._parsing = True
        try:
            while True:
                self._feed()
                req = self._complete
                if req is None:
                    return
                self._complete = None
                self._begin(req)
                transport = self.transport
                if self.busy or not self.buf or transport is None or transport.is_closing():
                    return
        finally:
            self._parsing = False

    def _feed(self) -> None:
        """Feed the parser the bytes it has not seen; a request it completes is `_complete`."""
        buf = self.buf
        if self._fed == 0:
            # RFC 9112 2.2: empty lines before a request line are ignored
            skip = 0
            while skip < len(buf) and buf[skip] in _CRLF:
                skip += 1
            if skip:
                del buf[:skip]
            if not buf:
                return
        data = bytes(buf[self._fed :]) if self._fed else bytes(buf)
        self._fed = len(buf)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _Next) or self._complete is not None:
                self._broken = True  # parsed again, by a new parser, after the answer
            elif isinstance(cause, _Cold):
                self._hand_over()
            elif isinstance(cause, _Refused):
                self._refuse_head()
            else:
                log.error("request parser callback failed", exc_info=cause)
                self._refuse(Problem(400, "the request could not be parsed"))
        except httptools.HttpParserUpgrade:
            if self._complete is not None:
                self._broken = True
            else:
                self._hand_over()
        except httptools.HttpParserError as exc:
            if self._complete is not None:
                self._broken = True  # what follows the request is judged after its answer
            else:
                self._refuse(Problem(400, f"malformed request: {exc}"))

    # httptools callbacks
    def on_message_begin(self) -> None:
        if self.busy:
            raise _Next
        self.req = _Request()

    def on_url(self, url: bytes) -> None:
        req = self.req
        assert req is not None
        req.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        req = self.req
        assert req is not None
        size = len(name) + len(value)
        req.head_bytes += size
        if size > MAX_FIELD_SIZE:
            req.cold = True  # aiohttp's path answers 431 with the same limits
        low = name.lower()
        text = value.decode("utf-8", "surrogateescape")
        if low == b"authorization":
            if req.authorization is not None:
                req.refused = strict.duplicate("Authorization")
            req.authorization = text
        elif low == b"content-length":
            try:
                req.content_length = int(text)
            except ValueError:
                req.cold = True
        elif low == b"x-request-id":
            req.request_id = text
        elif low == b"x-forwarded-for":
            req.forwarded_for.append(text)
        elif low == b"host":
            if req.host is not None:
                req.refused = strict.duplicate("Host")
            req.host = text
        elif low == b"origin":
            req.origin = text
        elif low in _COLD_HEADERS:
            req.cold = True
        req.headers.append((name.decode("latin-1"), text))

    def on_headers_complete(self) -> None:
        req = self.req
        assert req is not None
        parser = self.parser
        method = parser.get_method().decode("latin-1")
        version = parser.get_http_version()
        # gateway.strict's rules, before anything else (a refused request is never handed over)
        if req.refused is not None or b"#" in req.url or (req.host is None and version == "1.1"):
            if req.refused is None:
                req.refused = strict.fragment() if b"#" in req.url else strict.no_host()
            req.method = method
            req.target = req.path = req.url.decode("utf-8", "surrogateescape")
            raise _Refused
        target = req.url.decode("utf-8", "surrogateescape")
        path = _decoded(target.partition("?")[0])
        if (
            req.cold
            or version != "1.1"
            or method not in _FAST_METHODS
            or req.content_length > _READ_WHOLE_REQUEST
            or req.head_bytes + len(target) > MAX_HEADER_BYTES
            or len(target) > MAX_FIELD_SIZE
            or not target.startswith("/")
            or self.front.own_path(path)
        ):
            raise _Cold
        req.method = method
        req.target = target
        req.path = path
        req.keep_alive = parser.should_keep_alive()

    def on_body(self, body: bytes) -> None:
        req = self.req
        assert req is not None
        req.body_parts.append(body)

    def on_message_complete(self) -> None:
        req = self.req
        assert req is not None
        self.req = None
        head_end = self.buf.find(b"\r\n\r\n")
        req.end = head_end + 4 + req.content_length
        self.busy = True  # a request after this one stops the parser (`_Next`)
        self._complete = req  # answered by `_parse` once the parser has returned

    # --- hand-over to aiohttp ---------------------------------------------------------------

    def _hand_over(self) -> None:
        """Give the connection, from the first byte of this request, to aiohttp's handler."""
        self._flush_writes()  # the answers before this request go out before aiohttp's
        transport, factory = self.transport, self.front.handover
        self.transport = None
        self.front.forget(self)
        if transport is None or factory is None or transport.is_closing():
            return
        handler = factory()
        transport.set_protocol(handler)
        handler.connection_made(transport)
        data = bytes(self.buf)
        self.buf = bytearray()
        handler.data_received(data)

    def _refuse(self, problem: Problem) -> None:
        """A request that cannot be parsed: a 400 problem, then the connection is closed."""
        self._write(problem.status, *_problem_parts(problem, None, None), close=True)
        self.close()

    def _refuse_head(self) -> None:
        """A request whose head breaks a `gateway.strict` rule: its problem, with its request
        id and access line, then the connection is closed (what follows is not trusted)."""
        req = self.req
        assert req is not None and req.refused is not None
        self.req = None
        problem = req.refused
        rid = accept_request_id(req.request_id)
        path = _decoded(req.path.partition("?")[0].partition("#")[0])
        self._write(problem.status, *_problem_parts(problem, path, rid), close=True)
        self.close()
        token = correlation_id.set(rid)
        try:
            record_request(
                self.front.metrics, req.method, "unmatched", path, problem.status, 0.0, None, None
            )
        finally:
            correlation_id.reset(token)

    # --- answering --------------------------------------------------------------------------

    def _begin(self, req: _Request) -> None:
        """Answer `req` through the pipeline: its chain runs inline while every step answers
        at once (ADR 0006, ADR 0016), and `_answered` writes the answer - now, or from the
        callback or task where a step had to wait."""
        state = self.front.holder.state  # read once: the request stays on this state
        req.inflight = state.inflight
        req.inflight.count += 1
        req.started = time.perf_counter()
        req.remote = self.remote
        if req.host is None:
            req.host = _local_host(self.transport)
        parts = req.body_parts
        if parts:
            req.body = parts[0] if len(parts) == 1 else b"".join(parts)
        req.server = self
        req.done = self._answered
        try:
            state.pipeline.start(req)
        except Exception:  # a bug outside any policy: still an answer, never a hang
            if req.status == 0:
                token = correlation_id.set(req.rid)
                try:
                    self._finish(req, self._crash(req))
                finally:
                    correlation_id.reset(token)

    def _answered(self, req: Exchange) -> None:
        """The chain's answer (`Exchange.done`): written now when nothing more has to be read
        from the upstream, else by a task that reads or streams its body."""
        assert isinstance(req, _Request)
        token = correlation_id.set(req.rid)
        try:
            try:
                answer = req.answer
                if answer is not None:
                    status = self._write_answer(req, answer)
                else:
                    response = req.response
                    whole = getattr(response, "whole_body", None)
                    body = (
                        whole()
                        if whole is not None and response.content_length is not None
                        else None
                    )
                    status = self._relay_now(req, response, body)
                    if status is None:
                        assert self.front.loop is not None  # the body is still coming
                        self.front.loop.create_task(self._relay_task(req, response))
                        return
                    response.close()
            except Problem as problem:
                status = self._problem(req, problem)
            except Exception:
                status = self._crash(req)
            self._finish(req, status)
        finally:
            correlation_id.reset(token)

    async def _relay_task(self, req: _Request, response: UpstreamResponse) -> None:
        token = correlation_id.set(req.rid)
        status = 500
        try:
            try:
                try:
                    status = await self._relay(req, response)
                finally:
                    response.close()
            except Problem as problem:
                status = self._problem(req, problem)
            except Exception:
                status = self._crash(req)
        finally:
            self._finish(req, status)
            correlation_id.reset(token)

    def _write_answer(self, req: _Request, answer: Answer) -> int:
        """An answer the gateway made (a problem, a preflight, a policy's own)."""
        body = answer.body
        chain = req.chain
        if chain is not None and chain.bodies and body:
            body = chain.body(req, body, True)
        fields = [f for f in answer.headers if f[0].lower() != "content-length"]
        if req.response_drop:
            fields = [f for f in fields if f[0].lower() not in req.response_drop]
        no_body = req.method == "HEAD" or answer.status in _NO_BODY_STATUS
        if answer.status not in _NO_BODY_STATUS:
            fields.append(("Content-Length", str(len(body))))
        self._write(
            answer.status,
            _REASONS.get(answer.status, ""),
            [],
            fields,
            b"" if no_body else body,
            close=not req.keep_alive,
            own=self._own_block(req, answer.headers),
        )
        return answer.status

    def _problem(self, req: _Request, problem: Problem) -> int:
        self._fail(req, problem, req.path, req.rid, req.rate)
        return problem.status

    def _crash(self, req: _Request) -> int:
        path = req.path
        http_log.exception("unhandled error", extra={"path": path})
        self._fail(req, Problem(500, "an unexpected error occurred"), path, req.rid, req.rate)
        return 500

    def _finish(self, req: _Request, status: int) -> None:
        """The request is answered: its access line and metrics, the log phase, then the next
        request."""
        assert req.inflight is not None
        req.inflight.leave()
        route = req.route
        record_request(
            self.front.metrics,
            req.method,
            route.name if route is not None else "unmatched",
            req.path,
            status,
            time.perf_counter() - req.started,
            req.consumer,
            req.fields,
        )
        chain = req.chain
        if chain is not None and chain.logs:
            chain.log(req)
        self._done(req)

    def _relay_now(
        self, req: _Request, upstream: UpstreamResponse, body: bytes | None
    ) -> int | None:
        """Write the whole answer if no more upstream bytes are needed for it - no body, or
        `body`, all of it, read already (its `Content-Length` is among the fields) - else None."""
        status = upstream.status
        no_body = req.method == "HEAD" or status in _NO_BODY_STATUS
        if body is None and not no_body:
            return None
        reason = upstream.reason or _REASONS.get(status, "")
        raw = getattr(upstream, "header_fields", None)  # the pooled client's: as received
        block = None
        chain = req.chain
        bodies = chain is not None and bool(chain.bodies)
        if (
            raw is not None
            and status not in _NO_BODY_STATUS
            and not req.response_drop
            and not bodies
        ):
            block = response_head_block(raw)
        if block is not None:  # the common case: the fields serialized in one pass
            self._send_head(
                status,
                reason,
                block[0] + self._own_block(req),
                block[1],
                b"" if no_body else body or b"",
                close=not req.keep_alive,
            )
            return status
        fields = _upstream_fields(upstream)
        if status in _NO_BODY_STATUS:
            fields = [f for f in fields if f[0].lower() != b"content-length"]
        if req.response_drop:
            drop = {n.encode("latin-1") for n in req.response_drop}
            fields = [f for f in fields if f[0].lower() not in drop]
        if bodies and body and not no_body:
            assert chain is not None
            body = chain.body(req, body, True)
            fields = [f for f in fields if f[0].lower() != b"content-length"]
            fields.append((b"Content-Length", b"%d" % len(body)))
        self._write(
            status,
            reason,
            fields,
            [],
            b"" if no_body else body or b"",
            close=not req.keep_alive,
            own=self._own_block(req),
        )
        return status

    @staticmethod
    def _own_block(req: _Request, have: list[tuple[str, str]] | None = None) -> bytes:
        """Our fields on an answer: its request id, the route's RateLimit fields (unless the
        answer names its own: a 429), and those the policies added."""
        own = b"%s: %s\r\n" % (_REQUEST_ID_FIELD, req.rid.encode())
        rate = req.rate
        if rate is not None and not (have and any(k == "RateLimit" for k, _ in have)):
            own += b"RateLimit-Policy: %s\r\nRateLimit: %s\r\n" % (
                rate[0].encode(),
                rate[1].encode(),
            )
        extra = req.response_extra
        if extra:
            own += b"".join(
                f"{name}: {value}\r\n".encode("utf-8", "surrogateescape") for name, value in extra
            )
        return own

    async def _relay(self, req: _Request, upstream: UpstreamResponse) -> int:
        status = self._relay_now(req, upstream, None)
        if status is not None:
            return status
        status = upstream.status
        length = upstream.content_length
        assert req.route is not None
        name = req.route.upstream
        if length is not None and length <= _READ_WHOLE_RESPONSE:
            body = await read_whole(upstream, name)
            answered = self._relay_now(req, upstream, body)
            assert answered is not None
            return answered
        fields = _upstream_fields(upstream)
        if req.response_drop:
            drop = {n.encode("latin-1") for n in req.response_drop}
            fields = [f for f in fields if f[0].lower() not in drop]
        chain = req.chain
        bodies = chain.bodies if chain is not None else ()
        if bodies:  # the policies may change the length: sent chunked
            fields = [f for f in fields if f[0].lower() != b"content-length"]
            length = None
        reason = upstream.reason or _REASONS.get(status, "")
        own = self._own_block(req)
        chunked = length is None
        if chunked:
            own += b"Transfer-Encoding: chunked\r\n"
        self._write(status, reason, fields, [], b"", close=not req.keep_alive, end=False, own=own)
        req.answered = True
        transport = self.transport
        try:
            async for chunk in upstream.iter_chunks():
                if self.transport is None:
                    break  # the client went away: stop reading the upstream
                if bodies:
                    assert chain is not None
                    chunk = chain.body(req, chunk, False)
                    if not chunk:
                        continue
                if chunked:
                    self.transport.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                else:
                    self.transport.write(chunk)
                await self._drained()
        except TransportError as exc:
            # Too late for a problem: cut the connection so the client sees a truncated body.
            log.warning("upstream body failed", extra={"upstream": name, "error": str(exc)})
            req.keep_alive = False
            if transport is not None:
                transport.abort()
            return status
        if self.transport is not None:
            if bodies:
                assert chain is not None
                tail = chain.body(req, b"", True)
                if tail:
                    self.transport.write(b"%x\r\n%b\r\n" % (len(tail), tail))
            if chunked:
                self.transport.write(b"0\r\n\r\n")
            if not req.keep_alive or self.front.closing:
                self.transport.close()
        return status

    def _fail(
        self,
        req: _Request,
        problem: Problem,
        instance: str,
        rid: str,
        rate: tuple[str, str] | None,
    ) -> None:
        if req.answered:  # mid-body: cut the connection, the client sees a truncated answer
            req.keep_alive = False
            if self.transport is not None:
                self.transport.abort()
            return
        self._write(problem.status, *_problem_parts(problem, instance, rid, rate))

    def _write(
        self,
        status: int,
        reason: str,
        fields: list[tuple[bytes, bytes]],
        extra: list[tuple[str, str]],
        body: bytes,
        *,
        close: bool = False,
        end: bool = True,
        own: bytes = b"",
    ) -> None:
        """Status line, `fields` (the upstream's, as received) then `extra` and `own` (ours,
        as text and serialized), Date if missing, and the body: one write."""
        parts = []
        dated = False
        for name, value in fields:
            if not dated and len(name) == 4 and name.lower() == b"date":
                dated = True
            parts.append(b"%s: %s\r\n" % (name, value))
        for name, value in extra:
            parts.append(f"{name}: {value}\r\n".encode("utf-8", "surrogateescape"))
        parts.append(own)
        self._send_head(status, reason, b"".join(parts), dated, body, close=close, end=end)

    def _send_head(
        self,
        status: int,
        reason: str,
        block: bytes,
        dated: bool,
        body: bytes,
        *,
        close: bool = False,
        end: bool = True,
    ) -> None:
        """The status line, the serialized fields `block`, `Date` unless `dated`, the framing
        end and the body, in one write; the connection closed after it when `close`."""
        transport = self.transport
        if transport is None:
            return
        close = close or self.front.closing
        line = _status_lines.get((status, reason))
        if line is None:
            line = b"HTTP/1.1 %d %s\r\n" % (status, reason.encode("latin-1", "replace"))
            if len(_status_lines) < 256:
                _status_lines[(status, reason)] = line
        parts = [line, block]
        if not dated:
            parts.append(self.front.date_field())
        parts.append(b"Connection: close\r\n\r\n" if close else b"\r\n")
        if body:
            parts.append(body)
        writes = self.front.writes
        if close or not end or writes is None:
            # closing, or a body follows from the caller: nothing held may come after it
            self._flush_writes()
            transport.write(b"".join(parts))
        else:
            writes.write(transport, b"".join(parts))  # sent at the end of this loop turn
        if close and end:
            transport.close()

    def _done(self, req: _Request) -> None:
        """The answer is out: drop the request's bytes and parse what came after it (unless
        `_parse` is running - an answer given at once - which goes on with it itself)."""
        del self.buf[: req.end]
        self._fed = 0
        if self._broken:
            self.parser = httptools.HttpRequestParser(self)
            self._broken = False
        self.busy = False
        assert self.front.loop is not None
        self.last = self.since = self.front.loop.time()
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        if not req.keep_alive or self.front.closing:
            self._flush_writes()
            transport.close()
            return
        if self._reading_paused:
            self._reading_paused = False
            transport.resume_reading()
        if self.buf:
            self._parse()


def _upstream_fields(upstream: UpstreamResponse) -> list[tuple[bytes, bytes]]:
    """The upstream's fields for the client, hop-by-hop gone, as bytes."""
    raw = getattr(upstream, "header_fields", None)  # the pooled client's: as received
    if raw is not None:
        return response_header_fields(raw)
    return [
        (name.encode("latin-1"), value.encode("utf-8", "surrogateescape"))
        for name, value in response_headers(upstream.headers).items()
    ]


def _decoded(path: str) -> str:
    return unquote(path) if "%" in path else path


def _local_host(transport: asyncio.Transport | None) -> str:
    sock = transport.get_extra_info("sockname") if transport is not None else None
    return f"{sock[0]}:{sock[1]}" if isinstance(sock, tuple) else "localhost"


def _problem_parts(
    problem: Problem,
    instance: str | None,
    rid: str | None,
    rate: tuple[str, str] | None = None,
) -> tuple[str, list[tuple[bytes, bytes]], list[tuple[str, str]], bytes]:
    body = orjson.dumps(problem.document(instance=instance))
    fields = [("Content-Type", PROBLEM_JSON), ("Content-Length", str(len(body)))]
    own = dict(problem.headers)  # a 429 names its own RateLimit fields
    if rate is not None:
        own.setdefault("RateLimit-Policy", rate[0])
        own.setdefault("RateLimit", rate[1])
    fields += own.items()
    if rid is not None:
        fields.append((REQUEST_ID_HEADER, rid))
    return _REASONS.get(problem.status, ""), [], fields, body
