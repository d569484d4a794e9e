"""Streaming routes: Server-Sent Events and WebSocket upgrades, proxied live (ADR 0035).

A route with `stream:` in gateway.yaml gets this step instead of the forward step:

    stream: {kind: sse}            # or websocket
    # idle: 60                     # seconds; see below (must exceed the upstream's heartbeat)
    # per_consumer: 5              # open streams per consumer in this gateway process
    # query_token: false           # websocket only: accept ?access_token= (browsers)

The route's chain runs as for any route - auth and scopes on connect, rate limit, forwarding
headers - then `Stream` counts the consumer's open streams (over the limit: 429 before any
upstream connection) and connects upstream with its own aiohttp client, never the pooled one
(whose body stall timeout would cut a quiet stream). An upstream refusal (401, 403, 429...) is
relayed as its answer. Accepted, the answer is a `StreamAnswer` that the aiohttp adapter runs
(`gateway.proxy`): the event stream is relayed chunk by chunk without buffering, ended when the
upstream is silent for `idle` seconds (its heartbeats keep a healthy stream alive); a WebSocket
is relayed message by message both ways, the gateway pinging both peers every `idle / 2`
seconds (a peer that misses its pong is dead). The front server hands such routes' requests
to aiohttp: their paths are registered while their config serves (`start` / `stop`) and the
front asks `Streams.streams_at` once per path it has not seen; a route without `stream:` runs
none of this.

When the gateway drains, `close_all` ends every stream at once (SSE: the body ends; WS: close
code 1001), so clients reconnect to another gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qsl, urlencode

import aiohttp
from aiohttp import WSCloseCode, WSMsgType, web
from marshmallow import Schema, fields, validate, validates_schema
from marshmallow import ValidationError as SchemaError

from chassis import Problem

from ..config.policies import PolicyRef
from ..routing import Router
from ..upstreams import NoReadyInstance
from .exchange import Exchange
from .forwarding import HOP_BY_HOP
from .policy import Answer, Policy, Verdict

__all__ = [
    "Stream",
    "StreamAnswer",
    "StreamToken",
    "Streams",
    "close_all",
    "shutdown",
    "streams_of",
]

log = logging.getLogger("portico.gateway.stream")

_KEY = "streams"  # in context.resources: one registry per gateway process
_SHUTDOWN_WAIT = 10.0  # seconds the gateway's shutdown waits for its streams to end
_REFUSAL_BODY = 64 * 1024  # an upstream's refusal is read whole up to this size
# Fields the client library writes itself on the upstream handshake, or that are framing.
_WS_DROP = HOP_BY_HOP | {
    "host",
    "content-length",
    "sec-websocket-key",
    "sec-websocket-version",
    "sec-websocket-extensions",
    "sec-websocket-protocol",
}
_SSE_DROP = HOP_BY_HOP | {"host", "content-length"}
_RESPONSE_DROP = HOP_BY_HOP | {"content-length", "x-request-id"}


class _Settings(Schema):
    kind = fields.String(required=True, validate=validate.OneOf(["sse", "websocket"]))
    idle = fields.Float(load_default=60.0, validate=validate.Range(min=1, max=3600))
    per_consumer = fields.Integer(load_default=5, validate=validate.Range(min=1, max=1000))
    query_token = fields.Boolean(load_default=False)
    max_message_bytes = fields.Integer(
        load_default=64 * 1024, validate=validate.Range(min=1024, max=16 * 1024 * 1024)
    )

    @validates_schema
    def token_for_sockets(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("query_token") and data.get("kind") != "websocket":
            raise SchemaError("only a websocket route may take ?access_token=", "query_token")


class Streams:
    """This process's open streams: counts per consumer, and a way to end them all."""

    def __init__(self) -> None:
        self.open: dict[str, int] = {}
        self.live: set[StreamAnswer] = set()
        self.closing = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        # The streaming routes of the configs being served (their `Stream.start` to `stop`),
        # as a router of their own: the front server hands requests on their paths to aiohttp.
        self._routes: dict[int, Any] = {}
        self._router: Router | None = None
        self.listeners: list[Callable[[], None]] = []  # told when those paths change

    def register(self, key: int, route: Any) -> None:
        self._routes[key] = route
        self._changed()

    def unregister(self, key: int) -> None:
        if self._routes.pop(key, None) is not None:
            self._changed()

    def _changed(self) -> None:
        self._router = Router(self._routes.values()) if self._routes else None
        for listener in self.listeners:
            listener()

    def streams_at(self, path: str) -> bool:
        """Whether a streaming route is at `path` (the front server asks once per path)."""
        router = self._router
        return router is not None and router.match(path) is not None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            # no pool limit: each stream holds its connection for its life; no total timeout
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, force_close=True),
                timeout=aiohttp.ClientTimeout(total=None),
                auto_decompress=False,
            )
        return self._session

    def take(self, consumer: str, limit: int) -> bool:
        count = self.open.get(consumer, 0)
        if count >= limit:
            return False
        self.open[consumer] = count + 1
        return True

    def give_back(self, consumer: str) -> None:
        left = self.open.get(consumer, 0) - 1
        if left > 0:
            self.open[consumer] = left
        else:
            self.open.pop(consumer, None)


def streams_of(resources: dict[str, Any] | None) -> Streams:
    """This gateway's registry of streams, kept across reloads in `context.resources`."""
    assert resources is not None
    found = resources.get(_KEY)
    if found is None:
        found = resources[_KEY] = Streams()
    return found


def close_all(resources: dict[str, Any]) -> None:
    """The gateway drains: every open stream ends now, new ones are refused (503)."""
    found = resources.get(_KEY)
    if found is not None:
        found.closing.set()


async def shutdown(resources: dict[str, Any]) -> None:
    """The gateway stops: end the streams and close the streams' client."""
    found = resources.get(_KEY)
    if found is None:
        return
    found.closing.set()
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(_SHUTDOWN_WAIT):  # each ends at once; never hang a stop
            for answer in list(found.live):
                await answer.finished.wait()
    if found._session is not None:
        await found._session.close()


def _consumer(ex: Exchange) -> str:
    """Who the per-consumer limit counts: the token's subject, else the client address."""
    claims = ex.claims
    if claims is not None:
        return f"sub:{claims.subject}"
    return f"ip:{ex.remote}"


def _pairs(headers: Any, drop: frozenset[str]) -> list[tuple[str, str]]:
    items = headers.items() if hasattr(headers, "items") else headers
    return [
        (k, v) for k, v in items if k.lower() not in drop and not k.lower().startswith("proxy-")
    ]


class StreamAnswer(Answer):
    """An accepted stream: the adapter calls `run` to relay it (see the module)."""

    __slots__ = ("consumer", "finished", "policy", "released", "upstream")

    def __init__(self, policy: Stream, consumer: str, upstream: Any, status: int) -> None:
        headers = _pairs(upstream.headers, _RESPONSE_DROP) if policy.kind == "sse" else []
        super().__init__(status, headers)
        self.policy = policy
        self.consumer = consumer
        self.upstream = upstream  # aiohttp ClientResponse (sse) or ClientWebSocketResponse
        self.released = False
        self.finished = asyncio.Event()
        policy.registry.live.add(self)

    def release(self) -> None:
        """Give the consumer's slot back and drop the upstream (idempotent)."""
        if self.released:
            return
        self.released = True
        registry = self.policy.registry
        registry.give_back(self.consumer)
        registry.live.discard(self)
        self.finished.set()
        if self.policy.kind == "sse":
            self.upstream.close()
        elif not self.upstream.closed:
            task = asyncio.get_running_loop().create_task(self.upstream.close())
            _closing.add(task)
            task.add_done_callback(_closing.discard)

    async def run(
        self, request: web.Request, ex: Exchange, own: Callable[[Exchange, Any], None]
    ) -> web.StreamResponse:
        try:
            if self.policy.kind == "sse":
                return await self._sse(request, ex, own)
            return await self._socket(request, ex, own)
        finally:
            self.release()

    async def _sse(
        self, request: web.Request, ex: Exchange, own: Callable[[Exchange, Any], None]
    ) -> web.StreamResponse:
        upstream = self.upstream
        idle = self.policy.idle
        response = web.StreamResponse(status=self.status, reason=upstream.reason or None)
        for name, value in self.headers:
            response.headers.add(name, value)
        own(ex, response.headers)
        await response.prepare(request)
        closing = self.policy.registry.closing
        ended = asyncio.ensure_future(closing.wait())
        try:
            while not closing.is_set():
                read = asyncio.ensure_future(upstream.content.readany())
                done, _ = await asyncio.wait(
                    {read, ended}, timeout=idle, return_when="FIRST_COMPLETED"
                )
                if read not in done:
                    read.cancel()
                    if not done:
                        log.info(
                            "stream idle past its limit",
                            extra={"route": ex.route.name if ex.route else ""},
                        )
                    break
                chunk = read.result()
                if not chunk:
                    break  # the upstream ended the stream (it drains, say)
                async with asyncio.timeout(idle):  # a client that takes nothing is gone
                    await response.write(chunk)
            with contextlib.suppress(ConnectionError):
                await response.write_eof()
        except (aiohttp.ClientError, ConnectionError, TimeoutError) as exc:
            log.info("stream ended", extra={"error": str(exc) or type(exc).__name__})
            if request.transport is not None:
                request.transport.close()
        finally:
            ended.cancel()
        return response

    async def _socket(
        self, request: web.Request, ex: Exchange, own: Callable[[Exchange, Any], None]
    ) -> web.StreamResponse:
        upstream: aiohttp.ClientWebSocketResponse = self.upstream
        policy = self.policy
        protocols = (upstream.protocol,) if upstream.protocol else ()
        client = web.WebSocketResponse(
            protocols=protocols,
            heartbeat=policy.idle / 2,
            autoping=True,
            max_msg_size=policy.max_message,
        )
        own(ex, client.headers)
        await client.prepare(request)
        closing = policy.registry.closing
        up = asyncio.ensure_future(_pump(upstream, client))
        down = asyncio.ensure_future(_pump(client, upstream))
        ended = asyncio.ensure_future(closing.wait())
        try:
            await asyncio.wait({up, down, ended}, return_when="FIRST_COMPLETED")
        finally:
            upstream_ended = up.done()
            for task in (up, down, ended):
                task.cancel()
            # no receive() left waiting on either socket before they are closed
            await asyncio.gather(up, down, ended, return_exceptions=True)
        if closing.is_set():
            code, message = WSCloseCode.GOING_AWAY, b"gateway draining"
        elif upstream_ended and upstream.close_code is not None:
            code, message = upstream.close_code, b""
        else:
            code, message = WSCloseCode.OK, b""
        with contextlib.suppress(Exception):
            await client.close(code=code, message=message)
        with contextlib.suppress(Exception):
            await upstream.close(
                code=WSCloseCode.GOING_AWAY if closing.is_set() else WSCloseCode.OK
            )
        return client


_closing: set[asyncio.Task[Any]] = set()


async def _pump(source: Any, sink: Any) -> None:
    """Relay `source`'s messages to `sink` until `source` closes (pings stay per hop)."""
    while True:
        msg = await source.receive()
        if msg.type == WSMsgType.TEXT:
            await sink.send_str(msg.data)
        elif msg.type == WSMsgType.BINARY:
            await sink.send_bytes(msg.data)
        elif msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR):
            return


class Stream(Policy):
    """The connect step of a streaming route (see the module)."""

    name = "stream"
    order = 990  # after auth (300), the rate limit (400) and forwarding headers (800)
    Settings = _Settings
    responses = {
        "429": {"description": "too many open streams for this consumer"},
        "503": {"description": "the gateway is draining: reconnect (to another one)"},
    }

    def __init__(self, settings: Any = None, context: Any = None) -> None:
        super().__init__(settings, context)
        cfg = settings or {}
        self.kind: str = cfg.get("kind", "sse")
        self.idle: float = cfg.get("idle", 60.0)
        self.limit: int = cfg.get("per_consumer", 5)
        self.max_message: int = cfg.get("max_message_bytes", 64 * 1024)
        self.route: Any = None
        self.upstream: Any = None
        self.registry = streams_of(context.resources if context is not None else {})

    @classmethod
    def companions(cls, ref: PolicyRef) -> tuple[PolicyRef, ...]:
        """The policies a `stream:` key brings besides this one: the query-token step."""
        if not ref.settings.get("query_token"):
            return ()
        return (
            PolicyRef(use="stream-token", cls=StreamToken, settings=None, order=StreamToken.order),
        )

    def bind(self, route: Any) -> Policy | None:
        bound = Stream(self.settings, self.context)
        bound.route = route
        bound.upstream = self.context.upstreams[route.upstream] if self.context else None
        return bound

    def on_request(self, ex: Exchange) -> Verdict:
        registry = self.registry
        if registry.closing.is_set():
            raise Problem(503, "the gateway is draining", headers={"Retry-After": "1"})
        if ex.method != "GET":  # HEAD (routed with GET): no stream to describe without one
            raise Problem(405, f"{ex.method} is not allowed here", headers={"Allow": "GET"})
        if not isinstance(ex.server, web.BaseRequest):
            raise Problem(500, "a stream route was not handed to the stream server")
        # A plain GET on a websocket route is sent on as one: the upstream says what it says
        # (426, say), as for any route, so its contract can be checked like theirs.
        upgrade = self.kind == "websocket" and web.WebSocketResponse().can_prepare(ex.server).ok
        consumer = _consumer(ex)
        if not registry.take(consumer, self.limit):
            raise Problem(
                429,
                f"at most {self.limit} open streams per consumer",
                headers={"Retry-After": "1"},
            )
        return self._connect(ex, consumer, upgrade)

    async def _connect(self, ex: Exchange, consumer: str, upgrade: bool) -> Answer:
        try:
            return await self._open(ex, consumer, upgrade)
        except BaseException:
            self.registry.give_back(consumer)
            raise

    async def _open(self, ex: Exchange, consumer: str, upgrade: bool) -> Answer:
        route, upstream = self.route, self.upstream
        try:
            instance = upstream.pick()
        except NoReadyInstance as exc:
            raise Problem(503, str(exc), headers={"Retry-After": str(exc.retry_after)}) from None
        if instance is None:
            raise Problem(
                503, f"{upstream.name} has no ready instance", headers={"Retry-After": "1"}
            )
        url = instance.origin + route.target(ex.target, ex.params)
        headers = ex.headers if ex.upstream_headers is None else ex.upstream_headers
        session = self.registry.session()
        try:
            async with asyncio.timeout(route.timeout):
                if upgrade:
                    return await self._open_socket(ex, session, url, headers, consumer)
                return await self._open_http(session, url, headers, consumer)
        except TimeoutError:
            raise Problem(504, f"{upstream.name} did not answer in time") from None
        except aiohttp.WSServerHandshakeError as exc:
            raise _refused(exc) from None
        except aiohttp.ClientError as exc:
            log.warning(
                "stream upstream failed", extra={"upstream": upstream.name, "error": str(exc)}
            )
            raise Problem(502, f"{upstream.name} is unavailable") from None

    async def _open_http(
        self, session: aiohttp.ClientSession, url: str, headers: Any, consumer: str
    ) -> Answer:
        """An event stream (an `sse` route), else the upstream's answer read whole."""
        response = await session.get(url, headers=_pairs(headers, _SSE_DROP), allow_redirects=False)
        ctype = response.headers.get("Content-Type", "")
        if self.kind == "sse" and response.status == 200 and ctype.startswith("text/event-stream"):
            return StreamAnswer(self, consumer, response, 200)
        try:  # a refusal (401, 403, 429, 426...) or not a stream: answered as the upstream's
            body = await response.content.read(_REFUSAL_BODY)
        finally:
            response.close()
        self.registry.give_back(consumer)
        drop = _RESPONSE_DROP - {"upgrade"} if response.status == 426 else _RESPONSE_DROP
        return Answer(response.status, _pairs(response.headers, drop), body)

    async def _open_socket(
        self, ex: Exchange, session: aiohttp.ClientSession, url: str, headers: Any, consumer: str
    ) -> Answer:
        offered = ex.header("Sec-WebSocket-Protocol")
        protocols = tuple(p.strip() for p in offered.split(",") if p.strip()) if offered else ()
        socket = await session.ws_connect(
            url,
            headers=_pairs(headers, _WS_DROP),
            protocols=protocols,
            autoping=True,
            heartbeat=self.idle / 2,
            max_msg_size=self.max_message,
        )
        return StreamAnswer(self, consumer, socket, 101)

    async def start(self) -> None:
        self.registry.register(id(self), self.route.config)

    async def stop(self) -> None:
        self.registry.unregister(id(self))

    def on_log(self, ex: Exchange) -> None:
        answer = ex.answer
        if isinstance(answer, StreamAnswer):
            answer.release()  # normally done already; a head policy that failed leaves it

    def stats(self) -> dict[str, Any] | None:
        name = self.route.name if self.route is not None else None
        live = [a for a in self.registry.live if a.policy.route is not None]
        return {
            "kind": self.kind,
            "open": sum(1 for a in live if a.policy.route.name == name),  # this route's
            "per_consumer": self.limit,
            "idle": self.idle,
        }


def _refused(exc: aiohttp.WSServerHandshakeError) -> Problem:
    """The upstream refused the WebSocket handshake: its status, if one a client can act on."""
    headers = {}
    for name in ("Retry-After", "WWW-Authenticate"):
        value = exc.headers.get(name) if exc.headers else None
        if value:
            headers[name] = value
    if exc.status in (400, 401, 403, 404, 426, 429, 503):
        return Problem(
            exc.status, f"the upstream refused the WebSocket: {exc.message}", headers=headers
        )
    return Problem(502, "the upstream did not accept the WebSocket")


class StreamToken(Policy):
    """`?access_token=` as the bearer token, on a websocket route with `query_token: true`
    only (browsers cannot set `Authorization` on a WebSocket). Runs before auth; the parameter
    is removed from the target, so it is neither forwarded nor logged."""

    name = "stream-token"
    order = 250  # before auth (300)

    def on_request(self, ex: Exchange) -> Verdict:
        path, sep, query = ex.target.partition("?")
        if not sep or "access_token=" not in query:
            return None
        pairs = parse_qsl(query, keep_blank_values=True)
        tokens = [v for k, v in pairs if k == "access_token"]
        if len(tokens) != 1 or not tokens[0]:
            raise Problem(400, "give access_token once, or an Authorization field")
        if ex.authorization is not None:
            raise Problem(400, "give access_token or an Authorization field, not both")
        rest = urlencode([(k, v) for k, v in pairs if k != "access_token"])
        ex.target = path + ("?" + rest if rest else "")
        ex.authorization = f"Bearer {tokens[0]}"
        ex.set_header("Authorization", ex.authorization)
        return None
