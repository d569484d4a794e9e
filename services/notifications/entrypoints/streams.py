"""Live notifications: `GET /api/v1/notifications/stream` (Server-Sent Events) and
`GET /api/v1/notifications/ws` (WebSocket, JSON messages), ADR 0035.

Both check the token on connect (scope notifications:read; a notifications:read:all token
follows everyone's, as the list does), refuse a consumer over its open-stream limit with a 429
problem before anything streams, then send every notification stored after their position
(the stream's last id, `Last-Event-ID` / `?last_event_id=` on reconnect; else the newest
existing one), woken by the event consumer (`LiveHub`) or their own poll of the store.
Heartbeats keep a quiet stream alive; a dead peer or the process's drain ends it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import datetime

import orjson
from aiohttp import WSCloseCode, WSMsgType, web

from chassis import Problem
from chassis.aiohttp import CLAIMS, require_scopes
from chassis.pagination import InvalidCursor, decode_cursor, encode_cursor

from ..domain import Notification
from ..service_layer import queries
from ..service_layer.live import Follower, LiveHub, TooManyStreams
from .deps import DEPS
from .routes import READ, READ_ALL, routes
from .routes import _dump as dump

__all__ = ["BATCH"]

BATCH = 100  # notifications read (and sent) per store read
_RETRY_MS = 2000  # SSE `retry:`: how soon a browser reconnects after the stream ends
Position = tuple[datetime, str] | None


def _position(text: str | None, where: str) -> Position:
    if not text:
        return None
    try:
        return decode_cursor(text)
    except InvalidCursor:
        raise Problem(400, f"{where} is not an id this stream sent") from None


async def _open(request: web.Request, resume: str | None, where: str) -> tuple[Follower, Position]:
    """Register the caller's stream (429 over the limit) and find where it starts."""
    claims = request[CLAIMS]
    deps = request.app[DEPS]
    hub = deps.live
    after = _position(resume, where)
    owner = claims.owner_filter(READ_ALL)
    if hub.closing:  # draining: a new stream would end at once
        raise Problem(503, "the service is draining", headers={"Retry-After": "1"})
    try:
        follower = hub.open(owner, claims.subject)
    except TooManyStreams:
        raise Problem(
            429,
            f"at most {hub.limit} open notification streams per consumer",
            headers={"Retry-After": str(max(1, round(hub.heartbeat)))},
        ) from None
    if after is None:
        try:
            after = await queries.latest_position(deps.uow, owner)
        except BaseException:
            hub.close(follower)
            raise
    return follower, after


async def _follow(
    hub: LiveHub,
    request: web.Request,
    follower: Follower,
    after: Position,
    send: Callable[[list[Notification]], Awaitable[None]],
    beat: Callable[[], Awaitable[None]] | None,
    alive: Callable[[], bool],
) -> None:
    """Send what is stored after `after` as it comes, until draining or the peer is gone.
    `beat` (SSE) is called after `hub.heartbeat` quiet seconds; WS pings on its own."""
    loop = asyncio.get_running_loop()
    uow = request.app[DEPS].uow
    quiet_since = loop.time()
    while not hub.closing and alive():
        follower.wake.clear()  # before reading: a wake during the read is kept
        rows = await queries.notifications_after(uow, follower.owner, after, BATCH)
        if rows:
            await send(rows)
            after = (rows[-1].created_at, rows[-1].id)
            quiet_since = loop.time()
            continue
        wait = hub.poll
        if beat is not None:
            wait = min(wait, quiet_since + hub.heartbeat - loop.time())
        if wait > 0:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await follower.wake.wait()
        if beat is not None and loop.time() - quiet_since >= hub.heartbeat:
            await beat()
            quiet_since = loop.time()


def _event(n: Notification) -> bytes:
    data = orjson.dumps(dump(n))
    return b"id: %s\nevent: notification\ndata: %s\n\n" % (
        encode_cursor(n.created_at, n.id).encode(),
        data,
    )


@routes.get("/api/v1/notifications/stream")
@require_scopes(READ)
async def stream_notifications(request: web.Request) -> web.StreamResponse:
    """The caller's new notifications as Server-Sent Events, live.
    ---
    get:
      operationId: streamNotifications
      summary: Follow my notifications (Server-Sent Events)
      description: "`text/event-stream`: one `notification` event per notification stored
        after the stream's position, each with an `id:`; reconnect with `Last-Event-ID` to
        resume without loss. Comment lines (`: heartbeat`) keep a quiet stream alive; the
        stream ends when the service drains (reconnect). Scope notifications:read
        (notifications:read:all: everyone's)."
      tags: [notifications]
      security: [{bearerAuth: ["notifications:read"]}]
      parameters:
        - {in: header, name: Last-Event-ID, required: false, schema: {type: string}}
      responses:
        200:
          description: The event stream
          content:
            text/event-stream:
              schema: {type: string}
        400: BadRequest
        401: Unauthorized
        403: Forbidden
        429: TooManyRequests
        503: Draining
    """
    hub = request.app[DEPS].live
    follower, after = await _open(request, request.headers.get("Last-Event-ID"), "Last-Event-ID")
    try:
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",  # nginx: pass each event on at once
            }
        )
        await response.prepare(request)
        gone = False

        async def write(data: bytes) -> None:
            nonlocal gone
            try:  # a peer that does not take a heartbeat within its interval is dead
                async with asyncio.timeout(hub.heartbeat):
                    await response.write(data)
            except (ConnectionError, TimeoutError):
                gone = True

        async def send(rows: list[Notification]) -> None:
            await write(b"".join(_event(n) for n in rows))

        async def beat() -> None:
            await write(b": heartbeat\n\n")

        await write(b"retry: %d\n\n" % _RETRY_MS)
        await _follow(hub, request, follower, after, send, beat, lambda: not gone)
        if not gone:
            with contextlib.suppress(ConnectionError):
                await response.write_eof()
        return response
    finally:
        hub.close(follower)


@routes.get("/api/v1/notifications/ws")
@require_scopes(READ)
async def notifications_socket(request: web.Request) -> web.StreamResponse:
    """The caller's new notifications over a WebSocket, live.
    ---
    get:
      operationId: notificationsSocket
      summary: Follow my notifications (WebSocket)
      description: "A WebSocket upgrade (426 without one). The server sends one JSON text
        message per notification, with `type` (notification), `id` (its event id) and
        `notification` (as listed); `?last_event_id=` resumes after an id. Pings keep it alive;
        it closes with 1001 when the service drains (reconnect). Scope notifications:read."
      tags: [notifications]
      security: [{bearerAuth: ["notifications:read"]}]
      parameters:
        - {in: query, name: last_event_id, required: false, schema: {type: string}}
      responses:
        101:
          description: Switching to the WebSocket protocol
        400: BadRequest
        401: Unauthorized
        403: Forbidden
        426:
          description: Not a WebSocket upgrade
        429: TooManyRequests
        503: Draining
    """
    hub = request.app[DEPS].live
    socket = web.WebSocketResponse(heartbeat=hub.heartbeat, autoping=True, max_msg_size=4096)
    if not socket.can_prepare(request).ok:
        raise Problem(426, "this resource speaks WebSocket only", headers={"Upgrade": "websocket"})
    resume = request.query.get("last_event_id")
    follower, after = await _open(request, resume, "last_event_id")
    try:
        await socket.prepare(request)

        async def listen() -> None:
            """Read the client's frames (pongs and close are handled by receiving); anything
            it sends is ignored. Its end (close, dead peer) ends the stream."""
            try:
                while True:
                    msg = await socket.receive()
                    if msg.type in (WSMsgType.CLOSE, WSMsgType.CLOSED, WSMsgType.ERROR):
                        return
            finally:
                follower.wake.set()

        reader = asyncio.create_task(listen())

        async def send(rows: list[Notification]) -> None:
            for n in rows:
                doc = {
                    "type": "notification",
                    "id": encode_cursor(n.created_at, n.id),
                    "notification": dump(n),
                }
                with contextlib.suppress(ConnectionError):
                    await socket.send_str(orjson.dumps(doc).decode())

        try:
            await _follow(hub, request, follower, after, send, None, lambda: not reader.done())
        finally:
            if not socket.closed:
                await socket.close(code=WSCloseCode.GOING_AWAY, message=b"draining")
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        return socket
    finally:
        hub.close(follower)
