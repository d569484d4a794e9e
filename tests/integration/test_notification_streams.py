"""Live notifications through the gateway (ADR 0035), with real clients: aiohttp's WebSocket
client and an SSE reader (aiohttp streaming reads), through the gateway (its front server, and
its aiohttp server alone) to a real notifications app on PostgreSQL that consumes real events
from RabbitMQ.

Small settings: the service heartbeats every 0.2 s, the gateway's idle limit is 1 s and the
notifications upstream's timeout (the pooled client's body stall timeout, which would cut a
quiet stream on a plain route) is 1 s. Every wait is for an event, bounded by DEADLINE.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
import yaml
from aiohttp import ClientSession, WSMsgType, web
from aiohttp.test_utils import TestServer
from kombu import Producer

from chassis import create_db_engine
from chassis.db import sync_url
from chassis.drain import DRAIN
from chassis.messaging import BrokerSettings, Event
from chassis.messaging.events import CONTENT_TYPE, connect, events_exchange
from gateway.app import create_app as gateway_app
from gateway.config import parse_config
from services.notifications.__main__ import init as init_notifications
from services.notifications.adapters.repository import record_notification
from services.notifications.app import QUEUE
from services.notifications.app import create_app as notifications_app
from services.notifications.domain import compose
from services.notifications.entrypoints import DEPS
from services.notifications.settings import NotificationsSettings
from tests.integration.test_gateway_failover import Proc, running
from tests.support.brokers import cleanup, isolated_settings, rabbitmq_reachable
from tests.support.external import throwaway_postgres
from tests.support.front import AiohttpTestServer, FrontTestServer
from tests.support.tokens import TestIssuer
from tests.support.waiting import wait_until_async
from tools.stack import free_port

pytestmark = pytest.mark.postgres

DEADLINE = 20.0
HEARTBEAT = 0.2  # the service's
STALL = 1.0  # the upstream's timeout: a plain route's body stall limit
SSE = "/api/v1/notifications/stream"
WS = "/api/v1/notifications/ws"
READ = ("notifications:read",)
JWKS = "/.well-known/jwks.json"
GATEWAY_LIMIT = 3  # open streams per consumer, on the gateway
SERVICE_LIMIT = 4  # and on the service


@dataclass
class Stack:
    issuer: TestIssuer
    gateway: FrontTestServer | AiohttpTestServer
    gateway_app: web.Application
    notes: TestServer
    notes_app: web.Application
    broker: BrokerSettings
    database_url: str

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.gateway.port}{path}"

    def auth(self, sub: str = "alice", scopes: tuple[str, ...] = READ) -> dict[str, str]:
        return self.issuer.auth(scopes, sub=sub)

    async def publish(self, owner: str, order_id: str) -> None:
        """An `order.rejected` event on the broker: the service stores one notification."""
        event = Event("order.rejected", {"order_id": order_id, "owner": owner, "reason": "x"})
        await asyncio.to_thread(_publish, self.broker, event)


def _publish(broker: BrokerSettings, event: Event) -> None:
    with connect(broker) as conn:
        exchange = events_exchange(broker)
        Producer(conn.default_channel).publish(
            event.to_json(),
            exchange=exchange,
            routing_key=event.type,
            content_type=CONTENT_TYPE,
            content_encoding="utf-8",
            message_id=event.id,
            declare=[exchange],
        )


def _gateway_raw(upstream: str, issuer: TestIssuer, per_consumer: int, jwks: str) -> Any:
    auth = {"required": True, "scopes": list(READ)}
    return {
        "auth": {
            "issuer": issuer.issuer,
            "audience": issuer.audience,
            "jwks_url": jwks,
        },
        "upstreams": {
            "notifications": {
                "instances": [upstream],
                "timeout": STALL,
                "health": {"interval": 60},
            }
        },
        "routes": [
            {
                "name": "notifications.list",
                "methods": ["GET"],
                "path": "/api/v1/notifications",
                "upstream": "notifications",
                "auth": auth,
            },
            {
                "name": "notifications.stream",
                "methods": ["GET"],
                "path": SSE,
                "upstream": "notifications",
                "auth": auth,
                "stream": {"kind": "sse", "idle": 1.0, "per_consumer": per_consumer},
            },
            {
                "name": "notifications.ws",
                "methods": ["GET"],
                "path": WS,
                "upstream": "notifications",
                "auth": auth,
                "stream": {
                    "kind": "websocket",
                    "idle": 1.0,
                    "per_consumer": per_consumer,
                    "query_token": True,
                },
            },
        ],
    }


def _gateway_config(upstream: str, issuer: TestIssuer, per_consumer: int) -> Any:
    jwks = f"{upstream}/.well-known/jwks.json"  # never fetched: the tests pass a verifier
    return parse_config(_gateway_raw(upstream, issuer, per_consumer, jwks), environ={})


@pytest.fixture
def broker() -> Iterator[BrokerSettings]:
    settings = isolated_settings(rabbitmq_reachable())
    yield settings
    cleanup(settings, [f"{settings.queue_prefix}{QUEUE}", f"{settings.queue_prefix}{QUEUE}.dlq"])


@pytest.fixture(params=["front", "aiohttp"])
async def stack(
    aiohttp_server: Any, broker: BrokerSettings, request: pytest.FixtureRequest
) -> AsyncIterator[Stack]:
    """The service on a real port, the gateway in front of it on either of its servers (the
    front server hands streams to aiohttp; GATEWAY_SERVER=aiohttp serves them itself)."""
    issuer = TestIssuer()
    with throwaway_postgres("streams") as url:
        settings = NotificationsSettings(
            database_url=url,
            stream_heartbeat=HEARTBEAT,
            stream_poll=30.0,
            stream_limit=SERVICE_LIMIT,
        )
        init_notifications(settings)
        notes_app = notifications_app(settings, verifier=issuer.async_verifier(), broker=broker)
        notes: TestServer = await aiohttp_server(notes_app, host="127.0.0.1")
        upstream = str(notes.make_url("")).rstrip("/")
        app = gateway_app(
            _gateway_config(upstream, issuer, per_consumer=GATEWAY_LIMIT),
            verifier=issuer.async_verifier(),
        )
        gateway: FrontTestServer | AiohttpTestServer = (
            FrontTestServer(app) if request.param == "front" else AiohttpTestServer(app)
        )
        await gateway.start_server()
        try:
            async with ClientSession() as probe:  # the consumer's queue is bound
                resp = await probe.get(f"{upstream}/health/ready")
                assert resp.status == 200, await resp.text()
            yield Stack(issuer, gateway, app, notes, notes_app, broker, url)
        finally:
            await gateway.close()
            await notes.close()


@pytest.fixture
async def client() -> AsyncIterator[ClientSession]:
    async with ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
        yield session


class SseReader:
    """Server-Sent Events from a streamed aiohttp response: events and comment lines."""

    def __init__(self, response: aiohttp.ClientResponse) -> None:
        self.response = response

    async def next(self) -> dict[str, str] | None:
        """The next event or comment ({"comment": ...}); None at the end of the stream."""
        fields: dict[str, str] = {}
        async with asyncio.timeout(DEADLINE):
            while True:
                line = await self.response.content.readline()
                if not line:
                    return None
                text = line.decode().rstrip("\n")
                if not text:
                    if fields:
                        return fields
                    continue
                name, _, value = text.partition(":")
                fields[name or "comment"] = value.removeprefix(" ")

    async def event(self) -> dict[str, str]:
        """The next `notification` event, skipping heartbeats and the `retry:` hint."""
        while True:
            got = await self.next()
            assert got is not None, "the stream ended"
            if got.get("event") == "notification":
                return got


async def _sse(
    client: ClientSession, stack: Stack, headers: dict[str, str] | None = None
) -> SseReader:
    resp = await client.get(stack.url(SSE), headers=headers or stack.auth())
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    return SseReader(resp)


async def _ws(client: ClientSession, stack: Stack, query: str = "", **kw: Any) -> Any:
    headers = kw.pop("headers", stack.auth())
    return await client.ws_connect(stack.url(WS + query), headers=headers, **kw)


async def _ws_note(ws: Any) -> dict[str, Any]:
    async with asyncio.timeout(DEADLINE):
        msg = await ws.receive()
    assert msg.type == WSMsgType.TEXT, msg
    doc: dict[str, Any] = orjson.loads(msg.data)
    assert doc["type"] == "notification"
    return doc


async def test_auth_is_checked_on_connect(stack: Stack, client: ClientSession) -> None:
    resp = await client.get(stack.url(SSE))
    assert resp.status == 401
    assert resp.headers["Content-Type"] == "application/problem+json"
    resp = await client.get(stack.url(SSE), headers=stack.auth(scopes=("orders:read",)))
    assert resp.status == 403
    assert (await resp.json())["status"] == 403
    for headers, query, status in (
        ({}, "", 401),
        (stack.auth(scopes=("orders:read",)), "", 403),
        ({}, "?access_token=not-a-token", 401),
    ):
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await _ws(client, stack, query, headers=headers)
        assert refused.value.status == status
    # the upstream saw none of them
    assert stack.notes_app[DEPS].live.open_count("alice") == 0


async def test_a_new_notification_reaches_both_streams(stack: Stack, client: ClientSession) -> None:
    sse = await _sse(client, stack)
    ws = await _ws(client, stack)
    # a browser's WebSocket: the token as a query parameter (this route only)
    token = stack.auth()["Authorization"].removeprefix("Bearer ")
    browser = await _ws(client, stack, f"?access_token={token}", headers={})
    await stack.publish("bob", "o-bob")  # someone else's: never on alice's streams
    await stack.publish("alice", "o-alice")
    event = await sse.event()
    note = orjson.loads(event["data"])
    assert note["order_id"] == "o-alice" and note["event_type"] == "order.rejected"
    assert event["id"]
    for socket in (ws, browser):
        doc = await _ws_note(socket)
        assert doc["id"] == event["id"]
        assert doc["notification"] == note
        await socket.close()
    sse.response.close()


async def test_quiet_streams_get_heartbeats_and_outlive_the_stall_timeout(
    stack: Stack, client: ClientSession
) -> None:
    sse = await _sse(client, stack)
    ws = await _ws(client, stack, autoping=False)  # the gateway's pings are ours to answer
    pings = 0
    notes: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def read_socket() -> Any:
        nonlocal pings
        while True:
            msg = await ws.receive()
            if msg.type == WSMsgType.PING:
                pings += 1
                await ws.pong(msg.data)
            elif msg.type == WSMsgType.TEXT:
                notes.put_nowait(orjson.loads(msg.data))
            else:
                return msg

    reader = asyncio.create_task(read_socket())
    loop = asyncio.get_running_loop()
    start = loop.time()
    beats = 0
    while loop.time() - start < 3 * STALL:  # three times what cuts a quiet plain route
        got = await sse.next()
        assert got is not None, "a quiet stream was cut"
        if got.get("comment") == "heartbeat":
            beats += 1
    assert beats >= 3
    assert pings >= 2  # the gateway pings every idle / 2 seconds
    assert not reader.done(), reader.result()
    # both are still open, and still deliver
    await stack.publish("alice", "o-late")
    assert orjson.loads((await sse.event())["data"])["order_id"] == "o-late"
    async with asyncio.timeout(DEADLINE):
        doc = await notes.get()
    assert doc["notification"]["order_id"] == "o-late"
    await ws.close()
    await reader
    sse.response.close()


async def test_last_event_id_resumes_without_loss(stack: Stack, client: ClientSession) -> None:
    sse = await _sse(client, stack)
    await stack.publish("alice", "o-1")
    first = await sse.event()
    sse.response.close()
    await stack.publish("alice", "o-2")
    await stack.publish("alice", "o-3")

    async def stored() -> int:
        resp = await client.get(stack.url("/api/v1/notifications"), headers=stack.auth())
        return len((await resp.json())["items"])

    async def all_stored() -> bool:
        return await stored() == 3

    await wait_until_async(all_stored, DEADLINE, "three notifications", interval=0.05)
    resumed = await _sse(client, stack, {**stack.auth(), "Last-Event-ID": first["id"]})
    got = [orjson.loads((await resumed.event())["data"])["order_id"] for _ in range(2)]
    assert got == ["o-2", "o-3"]
    resumed.response.close()
    ws = await _ws(client, stack, f"?last_event_id={first['id']}")
    docs = [await _ws_note(ws) for _ in range(2)]
    assert [d["notification"]["order_id"] for d in docs] == ["o-2", "o-3"]
    await ws.close()
    bad = await client.get(stack.url(SSE), headers={**stack.auth(), "Last-Event-ID": "nope!"})
    assert bad.status == 400
    assert bad.headers["Content-Type"] == "application/problem+json"


async def test_the_per_consumer_limit(stack: Stack, client: ClientSession) -> None:
    streams = [await _sse(client, stack), await _sse(client, stack)]
    socket = await _ws(client, stack)
    resp = await client.get(stack.url(SSE), headers=stack.auth())
    assert resp.status == 429  # the gateway's limit, before connecting upstream
    assert resp.headers["Content-Type"] == "application/problem+json"
    assert "Retry-After" in resp.headers
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await _ws(client, stack)
    assert refused.value.status == 429
    assert stack.notes_app[DEPS].live.open_count("alice") == GATEWAY_LIMIT
    other = await _sse(client, stack, stack.auth(sub="bob"))  # another consumer's own count
    # the service's own limit, for clients that reach it directly
    direct = f"http://127.0.0.1:{stack.notes.port}{SSE}"
    last = await client.get(direct, headers=stack.auth())
    assert last.status == 200
    over = await client.get(direct, headers=stack.auth())
    assert over.status == 429
    assert over.headers["Content-Type"] == "application/problem+json"
    # a stream closed gives its place back
    streams[0].response.close()

    async def admitted() -> bool:
        resp = await client.get(stack.url(SSE), headers=stack.auth())
        resp.close()
        return resp.status == 200

    await wait_until_async(admitted, DEADLINE, "a place given back", interval=0.05)
    for one in (streams[1], other):
        one.response.close()
    await socket.close()
    last.close()


async def test_gateway_drain_closes_streams(stack: Stack, client: ClientSession) -> None:
    sse = await _sse(client, stack)
    ws = await _ws(client, stack)
    stack.gateway_app[DRAIN].begin()  # what SIGTERM does first (chassis.drain)
    while (await sse.next()) is not None:
        pass  # heartbeats until the end
    async with asyncio.timeout(DEADLINE):
        msg = await ws.receive()
    assert msg.type == WSMsgType.CLOSE
    assert ws.close_code == 1001
    resp = await client.get(stack.url(SSE), headers=stack.auth())
    assert resp.status == 503  # a drained gateway takes no new streams


async def test_service_drain_closes_streams(stack: Stack, client: ClientSession) -> None:
    sse = await _sse(client, stack)
    ws = await _ws(client, stack)
    stack.notes_app[DRAIN].begin()
    while (await sse.next()) is not None:
        pass
    async with asyncio.timeout(DEADLINE):
        msg = await ws.receive()
    assert msg.type == WSMsgType.CLOSE
    assert ws.close_code == 1001  # the service's close, relayed by the gateway


async def test_sigterm_on_a_gateway_process_ends_its_streams(
    stack: Stack, client: ClientSession, aiohttp_server: Any, tmp_path: Path
) -> None:
    """A `python -m gateway` process (the stack's server kind) told to stop by SIGTERM: its
    streams end at once (SSE: the body ends; WS: 1001) and it exits 0 without waiting out
    its shutdown grace for them."""

    async def keys(_request: web.Request) -> web.Response:
        return web.json_response(stack.issuer.jwks())

    jwks_app = web.Application()
    jwks_app.router.add_get("/.well-known/jwks.json", keys)
    jwks: TestServer = await aiohttp_server(jwks_app, host="127.0.0.1")
    upstream = f"http://127.0.0.1:{stack.notes.port}"
    config = tmp_path / "gateway.yaml"
    raw = _gateway_raw(upstream, stack.issuer, GATEWAY_LIMIT, str(jwks.make_url(JWKS)))
    config.write_text(yaml.safe_dump(raw), encoding="utf-8")
    port = free_port()
    kind = "aiohttp" if isinstance(stack.gateway, AiohttpTestServer) else "front"
    env = {
        **os.environ,
        "GATEWAY_CONFIG": str(config),
        "GATEWAY_PORT": str(port),
        "GATEWAY_SERVER": kind,
        "PORTICO_SHUTDOWN_GRACE": "60",  # the streams must not hold the process this long
    }
    gateway = Proc("gateway", [sys.executable, "-m", "gateway"], env, tmp_path / "gateway.log")
    base = f"http://127.0.0.1:{port}"
    with running(gateway):
        gateway.start()

        async def ready() -> bool:
            assert gateway.alive(), gateway.tail()
            with contextlib.suppress(aiohttp.ClientError):
                async with client.get(f"{base}/readyz") as resp:
                    return resp.status == 200
            return False

        await wait_until_async(ready, DEADLINE, "the gateway process", interval=0.05)
        sse = await client.get(f"{base}{SSE}", headers=stack.auth())
        assert sse.status == 200, await sse.text()
        reader = SseReader(sse)
        assert (await reader.next()) == {"retry": "2000"}  # the stream is open end to end
        ws = await client.ws_connect(f"{base}{WS}", headers=stack.auth())
        assert gateway.popen is not None
        os.killpg(gateway.popen.pid, signal.SIGTERM)  # our child's own process group
        while (await reader.next()) is not None:
            pass
        async with asyncio.timeout(DEADLINE):
            msg = await ws.receive()
        assert msg.type == WSMsgType.CLOSE and ws.close_code == 1001
        code = await asyncio.to_thread(gateway.popen.wait, DEADLINE)
        assert code == 0, gateway.tail()


async def test_a_notification_another_process_stored_arrives_by_the_poll(
    stack: Stack, client: ClientSession
) -> None:
    """Stored behind this process's back (another notifications process's consumer): no wake
    reaches this process, its streams' own read of the store brings it."""
    stack.notes_app[DEPS].live.poll = 0.2  # read by each stream on every wait
    ws = await _ws(client, stack)
    message = compose("order.rejected", {"order_id": "o-elsewhere", "reason": "x"})
    assert message is not None
    engine = create_db_engine(sync_url(stack.database_url))
    try:
        with engine.begin() as conn:
            record_notification(
                conn,
                owner="alice",
                message=message,
                event_type="order.rejected",
                event_id=uuid.uuid4().hex,
                order_id="o-elsewhere",
                now=datetime.now(UTC),
            )
    finally:
        engine.dispose()
    doc = await _ws_note(ws)
    assert doc["notification"]["order_id"] == "o-elsewhere"
    await ws.close()
