"""One trace across services: gateway -> orders (aiohttp) -> catalog (Flask) -> the event.

Everything runs in this process with the SDK's in-memory exporter: the real gateway app and
its HTTP/1.1 transport, a small chassis-installed aiohttp "orders" app that calls a small
chassis-installed Flask "catalog" app (werkzeug in a thread) and writes an outbox row, the
outbox relay publishing it through kombu's in-process transport and an EventConsumer
handling it. Every span of the request must share one trace id.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from flask import Flask
from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_http_instrumentation
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from sqlalchemy import MetaData
from sqlalchemy.engine import Connection as DbConnection
from werkzeug.serving import make_server

from chassis import create_db_engine, sqlite_url, tracing
from chassis.aiohttp import install as install_aiohttp
from chassis.flask import install as install_flask
from chassis.messaging import (
    BrokerSettings,
    Event,
    EventConsumer,
    OutboxRelay,
    inbox_table,
    outbox_insert,
    outbox_table,
)
from gateway.app import create_app as create_gateway
from gateway.config import parse_config
from tests.support.waiting import wait_until

DEADLINE = 5.0


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    monkeypatch.delenv("PORTICO_TRACING", raising=False)
    tracing.reset()
    exp = InMemorySpanExporter()
    yield exp
    tracing.reset()  # no global provider or instrumentation leaks into other tests


@pytest.fixture
def catalog_url(exporter: InMemorySpanExporter) -> Iterator[str]:
    app = Flask("catalog")
    install_flask(app, "catalog")

    @app.get("/products/<pid>")
    def product(pid: str) -> Any:
        return {"id": pid, "price": 250}

    tracing.setup("catalog", app, exporter=exporter)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(DEADLINE)


async def test_one_trace_across_gateway_orders_catalog_and_an_event(
    exporter: InMemorySpanExporter, catalog_url: str, tmp_path: Path
) -> None:
    await _scenario(exporter, catalog_url, tmp_path)


async def _scenario(exporter: InMemorySpanExporter, catalog_url: str, tmp_path: Path) -> None:
    metadata = MetaData()
    outbox = outbox_table(metadata)
    inbox = inbox_table(metadata)
    engine = create_db_engine(sqlite_url(tmp_path / "orders.db"))
    metadata.create_all(engine)
    broker = BrokerSettings(url="memory://", exchange="portico.test.tracing")
    handled: list[int] = []
    received: list[dict[str, Any]] = []

    def on_placed(event: Event, _conn: DbConnection) -> None:
        handled.append(trace.get_current_span().get_span_context().trace_id)
        received.append(event.data)

    consumer = EventConsumer("notifications", ["order.placed"], on_placed, engine, inbox, broker)
    consumer.declare()
    relay = OutboxRelay(engine, outbox, broker)

    # orders: calls catalog with the instrumented aiohttp client, then writes the event.
    orders = web.Application()
    install_aiohttp(orders, "orders")
    tracing.setup("orders", orders, exporter=exporter)

    async def place(_request: web.Request) -> web.Response:
        async with (
            aiohttp.ClientSession() as session,
            session.get(f"{catalog_url}/products/7") as resp,
        ):
            product = await resp.json()
        with engine.begin() as conn:
            conn.execute(outbox_insert(outbox, Event("order.placed", {"product": product})))
        return web.json_response({"status": "placed"}, status=201)

    orders.router.add_post("/orders", place)
    orders_server = TestServer(orders, host="127.0.0.1")
    await orders_server.start_server()

    config = parse_config(
        {
            "auth": {
                "issuer": "https://issuer.test",
                "audience": "portico-api",
                "jwks_url": "http://127.0.0.1:9/jwks.json",
            },
            "upstreams": {
                "orders": {
                    "instances": [str(orders_server.make_url("")).rstrip("/")],
                    "health": {"interval": 60},
                }
            },
            "routes": [
                {
                    "name": "orders.place",
                    "methods": ["POST"],
                    "path": "/orders",
                    "upstream": "orders",
                    "auth": {"required": False},
                }
            ],
        },
        environ={},
    )
    gateway = create_gateway(config, transport_kind="http1")
    tracing.setup("gateway", gateway, exporter=exporter)
    gateway_server = TestServer(gateway, host="127.0.0.1")
    await gateway_server.start_server()
    try:
        # an outside client: its own (instrumented) session adds no span, the gateway starts
        with suppress_http_instrumentation():
            async with (
                aiohttp.ClientSession() as client,
                client.post(gateway_server.make_url("/orders"), json={}) as resp,
            ):
                assert resp.status == 201, await resp.text()
        assert await asyncio.to_thread(relay.run_once) == 1
        consumer.start()
        await asyncio.to_thread(wait_until, lambda: handled, DEADLINE, "the event handled")
    finally:
        consumer.stop()
        relay.stop()
        await gateway_server.close()
        await orders_server.close()
        engine.dispose()

    def spans() -> list[Any]:
        return list(exporter.get_finished_spans())

    def server_services() -> set[str]:
        return {
            s.resource.attributes["service.name"]
            for s in spans()
            if s.kind is trace.SpanKind.SERVER and s.context.trace_id == handled[0]
        }

    await asyncio.to_thread(
        wait_until,
        lambda: server_services() >= {"gateway", "orders", "catalog"},
        DEADLINE,
        "server spans of three services",
    )
    trace_id = handled[0]
    mine = [s for s in spans() if s.context.trace_id == trace_id]
    kinds = {s.kind for s in mine}
    assert {
        trace.SpanKind.SERVER,
        trace.SpanKind.CLIENT,
        trace.SpanKind.PRODUCER,
        trace.SpanKind.CONSUMER,
    } <= kinds
    by_id = {s.context.span_id: s for s in mine}

    def parent_of(span: Any) -> Any:
        return by_id.get(span.parent.span_id) if span.parent else None

    # orders' server span is the child of the gateway's own CLIENT span (not of the caller's)
    orders_server_span = next(
        s
        for s in mine
        if s.kind is trace.SpanKind.SERVER and s.resource.attributes["service.name"] == "orders"
    )
    gateway_client = parent_of(orders_server_span)
    assert gateway_client is not None
    assert gateway_client.kind is trace.SpanKind.CLIENT
    assert gateway_client.resource.attributes["service.name"] == "gateway"
    gateway_server_span = parent_of(gateway_client)
    assert gateway_server_span.kind is trace.SpanKind.SERVER
    assert gateway_server_span.parent is None  # the trace starts at the gateway
    # SQLAlchemy spans (chassis.db engines) join the request's trace too
    assert any(s.attributes.get("db.system") == "sqlite" for s in mine)
    consumer_span = next(s for s in mine if s.kind is trace.SpanKind.CONSUMER)
    producer_span = parent_of(consumer_span)
    assert producer_span is not None and producer_span.kind is trace.SpanKind.PRODUCER
    # the traceparent travelled in the message headers, not in the event's data
    assert received == [{"product": {"id": "7", "price": 250}}]


def test_off_by_default_wraps_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PORTICO_TRACING", raising=False)
    app = web.Application()
    before = list(app.middlewares)
    assert tracing.setup("gateway", app) is False
    assert tracing.ENABLED is False
    assert list(app.middlewares) == before
    assert tracing.current_traceparent() is None
    with tracing.resumed_span("saga RESERVE", "00-" + "1" * 32 + "-" + "2" * 16 + "-01") as span:
        assert span is None


def test_resumed_span_is_a_child_of_the_stored_traceparent(
    exporter: InMemorySpanExporter,
) -> None:
    tracing.setup("orders", exporter=exporter)
    tracer = trace.get_tracer("test")
    with tracer.start_as_current_span("POST /orders", kind=trace.SpanKind.SERVER):
        stored = tracing.current_traceparent()
    assert stored
    # later, in a task that never saw the request: the stored context is the parent
    with tracing.resumed_span("saga RESERVE", stored, service="orders", step="RESERVE") as span:
        assert span is not None and span.is_recording()
        with tracer.start_as_current_span("POST", kind=trace.SpanKind.CLIENT):
            pass
    # nothing stored (placed with tracing off): a background root, which is not sampled
    with tracing.resumed_span("saga PRICE", None, service="orders") as span:
        assert span is not None and not span.is_recording()
    request, call, step = (
        next(s for s in exporter.get_finished_spans() if s.name == name)
        for name in ("POST /orders", "POST", "saga RESERVE")
    )
    assert step.parent is not None and step.parent.span_id == request.context.span_id
    assert step.context.trace_id == request.context.trace_id
    assert step.kind is trace.SpanKind.INTERNAL and step.attributes == {"step": "RESERVE"}
    assert step.resource.attributes["service.name"] == "orders"
    assert call.parent is not None and call.parent.span_id == step.context.span_id
    assert len(exporter.get_finished_spans()) == 3


def test_unknown_mode_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORTICO_TRACING", "jaeger")
    with pytest.raises(ValueError, match="PORTICO_TRACING"):
        tracing.setup("gateway")


def test_file_mode_writes_json_lines(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PORTICO_TRACING", "file")
    tracing.reset()
    try:
        assert tracing.setup("catalog") is True
        tracer = trace.get_tracer("test")
        with (
            tracer.start_as_current_span("work", kind=trace.SpanKind.SERVER),
            tracer.start_as_current_span("inner"),
        ):
            pass
        with tracer.start_as_current_span("poll"):  # a background root span: not sampled
            pass
        trace.get_tracer_provider().force_flush()  # type: ignore[attr-defined]
        lines = (tmp_path / "var/traces/catalog.jsonl").read_text().splitlines()
        assert [json.loads(line)["name"] for line in lines] == ["inner", "work"]
    finally:
        tracing.reset()


async def test_rate_limit_call_is_a_redis_span_of_the_request(
    exporter: InMemorySpanExporter, redis_url: str, redis_key_prefix: str
) -> None:
    """The gateway's own Redis client (not redis-py, so no maintained instrumentation) makes
    a CLIENT span for its EVALSHA, inside the request's trace."""

    async def ok(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    upstream_app = web.Application()
    upstream_app.router.add_get("/health/ready", ok)
    upstream_app.router.add_get("/limited", ok)
    upstream = TestServer(upstream_app, host="127.0.0.1")
    await upstream.start_server()
    url = str(upstream.make_url("")).rstrip("/")
    config = parse_config(
        {
            "auth": {"issuer": "https://issuer.test", "jwks_url": url + "/jwks"},
            "rate_limits": {
                "redis_url": redis_url,
                "key_prefix": redis_key_prefix,
                "on_redis_error": "fail_closed",
                "policies": {"p": {"limit": 100, "period": 60}},
            },
            "upstreams": {"svc": {"instances": [url], "health": {"interval": 60}}},
            "routes": [
                {
                    "name": "limited",
                    "methods": ["GET"],
                    "path": "/limited",
                    "upstream": "svc",
                    "auth": {"required": False},
                    "rate_limit": "p",
                }
            ],
        },
        environ={},
    )
    gateway = create_gateway(config, transport_kind="http1")
    tracing.setup("gateway", gateway, exporter=exporter)
    server = TestServer(gateway, host="127.0.0.1")
    await server.start_server()
    try:
        with suppress_http_instrumentation():
            async with (
                aiohttp.ClientSession() as client,
                client.get(server.make_url("/limited")) as resp,
            ):
                assert resp.status == 200, await resp.text()
                assert "RateLimit" in resp.headers
    finally:
        await server.close()
        await upstream.close()
    spans = list(exporter.get_finished_spans())
    redis_span = next(s for s in spans if s.attributes.get("db.system") == "redis")
    assert redis_span.kind is trace.SpanKind.CLIENT and redis_span.name == "EVALSHA"
    parent = next(s for s in spans if s.context.span_id == redis_span.parent.span_id)
    assert parent.kind is trace.SpanKind.SERVER
    assert parent.resource.attributes["service.name"] == "gateway"
