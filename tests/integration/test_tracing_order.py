"""One order, one trace: gateway -> orders -> catalog, then the saga -> inventory and payments,
then its `order.confirmed` event -> notifications.

The real apps run in this process (aiohttp ones on TestServers, Flask ones under werkzeug in
threads) on SQLite files, with tokens from the test issuer instead of identity and events over
kombu's in-process transport, every service exporting to one InMemorySpanExporter. The saga
runs in a background task, after the request has been answered: its steps must still be
children of the request that placed the order, both when the request itself kicks the saga and
when the sweep picks it up (as after a retry, a restart, or on another replica).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from opentelemetry import trace
from opentelemetry.instrumentation.utils import suppress_http_instrumentation
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from werkzeug.serving import make_server

from chassis import tracing
from chassis.service_token import ServiceToken
from gateway.app import create_app as create_gateway
from gateway.config import parse_config
from services.catalog.__main__ import init as init_catalog
from services.catalog.app import create_app as create_catalog
from services.catalog.settings import CatalogSettings
from services.inventory.__main__ import init as init_inventory
from services.inventory.app import create_app as create_inventory
from services.inventory.settings import InventorySettings
from services.notifications.__main__ import init as init_notifications
from services.notifications.app import QUEUE
from services.notifications.app import create_app as create_notifications
from services.notifications.settings import NotificationsSettings
from services.orders.__main__ import init as init_orders
from services.orders.adapters.upstreams import SERVICE_SCOPE, HttpUpstreams
from services.orders.app import create_app as create_orders
from services.orders.entrypoints import DEPS
from services.orders.settings import OrdersSettings
from services.payments.__main__ import init as init_payments
from services.payments.app import create_app as create_payments
from services.payments.settings import PaymentsSettings
from tests.support.brokers import isolated_settings
from tests.support.tokens import TestIssuer
from tests.support.waiting import wait_until_async

DEADLINE = 20.0
SERVICES = ("orders", "gateway", "catalog", "inventory", "payments", "notifications")
SERVER, CLIENT = trace.SpanKind.SERVER, trace.SpanKind.CLIENT
PRODUCER, CONSUMER = trace.SpanKind.PRODUCER, trace.SpanKind.CONSUMER


class IssuedToken(ServiceToken):
    """Orders' service token minted by the test issuer: no identity service needed."""

    def __init__(self, issuer: TestIssuer) -> None:
        self._issuer = issuer

    async def get(self) -> str:
        return self._issuer.token(SERVICE_SCOPE.split(), sub="orders")

    def invalidate(self, token: str) -> None:
        return None


@pytest.fixture
def exporter(monkeypatch: pytest.MonkeyPatch) -> Iterator[InMemorySpanExporter]:
    monkeypatch.delenv("PORTICO_TRACING", raising=False)
    tracing.reset()
    exp = InMemorySpanExporter()
    # Providers first, so every engine and client session the apps make is instrumented.
    for service in SERVICES:
        tracing.setup(service, exporter=exp)
    yield exp
    tracing.reset()  # no global provider or instrumentation leaks into other tests


@contextlib.contextmanager
def wsgi(app: Any) -> Iterator[str]:
    """Serve a Flask app from a thread on a free loopback port; its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(DEADLINE)


async def _serve(app: web.Application) -> TestServer:
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server


def _service(span: ReadableSpan) -> str:
    return str(span.resource.attributes["service.name"])


@pytest.mark.parametrize("resumed_by", ["request", "sweep"])
async def test_one_order_is_one_trace_through_the_saga_and_its_event(
    exporter: InMemorySpanExporter, tmp_path: Path, resumed_by: str
) -> None:
    issuer = TestIssuer()
    broker = isolated_settings("memory://")

    def traced(service: str, app: Any) -> Any:
        """Instrument `app` with its service's provider (the fixture's, so no second one)."""
        tracing.setup(service, app, exporter=exporter)
        return app

    db = tmp_path.as_posix()

    catalog_settings = CatalogSettings(database_url=f"sqlite:///{db}/catalog.db", relay=False)
    init_catalog(catalog_settings, seed=True)
    payments_settings = PaymentsSettings(database_url=f"sqlite:///{db}/payments.db", relay=False)
    init_payments(payments_settings)
    inventory_settings = InventorySettings(
        database_url=f"sqlite+aiosqlite:///{db}/inventory.db", relay=False
    )
    init_inventory(inventory_settings, seed=True)
    notifications_settings = NotificationsSettings(
        database_url=f"sqlite+aiosqlite:///{db}/notifications.db"
    )
    init_notifications(notifications_settings)

    servers: list[TestServer] = []
    session: aiohttp.ClientSession | None = None
    with contextlib.ExitStack() as threads:
        catalog_url = threads.enter_context(
            wsgi(traced("catalog", create_catalog(catalog_settings, verifier=issuer.verifier())))
        )
        payments_url = threads.enter_context(
            wsgi(traced("payments", create_payments(payments_settings, verifier=issuer.verifier())))
        )
        try:
            notifications = await _serve(
                traced(
                    "notifications",
                    create_notifications(
                        notifications_settings, verifier=issuer.async_verifier(), broker=broker
                    ),
                )
            )
            servers.append(notifications)
            inventory = await _serve(
                traced(
                    "inventory",
                    create_inventory(inventory_settings, verifier=issuer.async_verifier()),
                )
            )
            servers.append(inventory)
            orders_settings = OrdersSettings(
                database_url=f"sqlite+aiosqlite:///{db}/orders.db", saga_poll_interval=0.05
            )
            init_orders(orders_settings)
            session = aiohttp.ClientSession()
            upstreams = HttpUpstreams(
                session,
                IssuedToken(issuer),
                catalog_url=catalog_url,
                inventory_url=str(inventory.make_url("")).rstrip("/"),
                payments_url=payments_url,
            )
            orders_app = traced(
                "orders",
                create_orders(
                    orders_settings,
                    verifier=issuer.async_verifier(),
                    upstreams=upstreams,
                    broker=broker,
                ),
            )
            orders = await _serve(orders_app)
            servers.append(orders)
            if resumed_by == "sweep":
                # The request only stores the order; the driver's sweep runs its saga, in a
                # task that never saw the request's context.
                orders_app[DEPS].started.driver = None
            gateway = await _serve(
                traced(
                    "gateway",
                    create_gateway(
                        _gateway_config(issuer, str(orders.make_url("")).rstrip("/")),
                        verifier=issuer.async_verifier(),
                        transport_kind="http1",
                    ),
                )
            )
            servers.append(gateway)
            await _scenario(exporter, issuer, gateway, orders, notifications)
        finally:
            for server in reversed(servers):
                await server.close()
            if session is not None:
                await session.close()


def _gateway_config(issuer: TestIssuer, orders_url: str) -> Any:
    return parse_config(
        {
            "auth": {
                "issuer": issuer.issuer,
                "audience": issuer.audience,
                "jwks_url": "http://127.0.0.1:9/jwks.json",  # the injected verifier answers
            },
            "upstreams": {"orders": {"instances": [orders_url], "health": {"interval": 60}}},
            "routes": [
                {
                    "name": "orders.create",
                    "methods": ["POST"],
                    "path": "/api/v1/orders",
                    "upstream": "orders",
                    "auth": {"required": True, "scopes": ["orders:write"]},
                }
            ],
        },
        environ={},
    )


async def _scenario(
    exporter: InMemorySpanExporter,
    issuer: TestIssuer,
    gateway: TestServer,
    orders: TestServer,
    notifications: TestServer,
) -> None:
    body = {"items": [{"sku": "BK-0001", "quantity": 1}], "payment_method": "pm_card_ok"}
    headers = {**issuer.auth(("orders:write",), sub="alice"), "Idempotency-Key": "trace-1"}
    # an outside client: its own (instrumented) session adds no span, the gateway starts
    with suppress_http_instrumentation():
        async with (
            aiohttp.ClientSession() as client,
            client.post(gateway.make_url("/api/v1/orders"), json=body, headers=headers) as resp,
        ):
            assert resp.status == 202, await resp.text()
            order_id = (await resp.json())["id"]

        reader = issuer.auth(("orders:read", "notifications:read"), sub="alice")
        async with aiohttp.ClientSession(headers=reader) as client:

            async def confirmed() -> bool:
                async with client.get(orders.make_url(f"/api/v1/orders/{order_id}")) as r:
                    return bool((await r.json())["status"] == "CONFIRMED")

            async def notified() -> bool:
                async with client.get(notifications.make_url("/api/v1/notifications")) as r:
                    items = (await r.json())["items"]
                return any(
                    n["order_id"] == order_id and n["event_type"] == "order.confirmed"
                    for n in items
                )

            await wait_until_async(
                confirmed, DEADLINE, "the saga to confirm the order", interval=0.05
            )
            await wait_until_async(
                notified, DEADLINE, "notifications to consume order.confirmed", interval=0.05
            )

    def spans() -> list[ReadableSpan]:
        return list(exporter.get_finished_spans())

    def posted() -> ReadableSpan | None:
        """The gateway's SERVER span for the POST: the root of the order's trace."""
        return next(
            (
                s
                for s in spans()
                if _service(s) == "gateway" and s.kind is SERVER and "POST" in s.name
            ),
            None,
        )

    def consumed(trace_id: int) -> bool:
        return any(
            s.kind is CONSUMER and s.name == "order.confirmed process"
            for s in spans()
            if s.context.trace_id == trace_id
        )

    def committed(trace_id: int) -> bool:
        """The COMMIT step's span has ended: it runs after `order.confirmed` is published."""
        return any(
            s.name.startswith("saga ") and s.attributes.get("portico.saga.step") == "COMMIT"
            for s in spans()
            if s.context.trace_id == trace_id
        )

    async def root_and_consumer() -> bool:
        root = posted()
        if root is None:
            return False
        return consumed(root.context.trace_id) and committed(root.context.trace_id)

    await wait_until_async(
        root_and_consumer,
        DEADLINE,
        "the order.confirmed CONSUMER span and the COMMIT step in the POST's trace",
        interval=0.05,
    )
    root = posted()
    assert root is not None and root.parent is None  # the trace starts at the gateway
    trace_id = root.context.trace_id
    mine = [s for s in spans() if s.context.trace_id == trace_id]
    by_id = {s.context.span_id: s for s in mine}

    def parent(span: ReadableSpan) -> ReadableSpan:
        assert span.parent is not None, f"{span.name} has no parent"
        found = by_id.get(span.parent.span_id)
        assert found is not None, f"the parent of {span.name} is not in the trace"
        return found

    def ancestors(span: ReadableSpan) -> list[ReadableSpan]:
        chain = []
        while span.parent is not None:
            span = parent(span)
            chain.append(span)
        return chain

    def one(service: str, kind: trace.SpanKind, name: str = "") -> list[ReadableSpan]:
        return [s for s in mine if _service(s) == service and s.kind is kind and name in s.name]

    # Every service took part in this one trace.
    assert {"gateway", "orders", "catalog", "inventory", "payments", "notifications"} <= {
        _service(s) for s in mine
    }
    # orders' SERVER span for the POST is the child of the gateway's CLIENT span
    (placing,) = one("orders", SERVER, "POST")
    assert parent(placing).kind is CLIENT and parent(parent(placing)) is root

    # Each saga step is a child of the placing request's span, though it ran after it ended.
    steps = {s.attributes["portico.saga.step"]: s for s in mine if s.name.startswith("saga ")}
    assert {"RESERVE", "CHARGE", "COMMIT"} <= set(steps), sorted(steps)
    for name, step in steps.items():
        assert _service(step) == "orders"
        assert step.kind is trace.SpanKind.INTERNAL
        assert parent(step) is placing, name
    assert steps["RESERVE"].attributes["portico.saga.outcome"] == "Reserved"
    assert steps["CHARGE"].attributes["portico.saga.outcome"] == "Captured"

    # inventory and payments served the saga's calls, under the step that made them
    reserve = [s for s in one("inventory", SERVER) if steps["RESERVE"] in ancestors(s)]
    commit = [s for s in one("inventory", SERVER) if steps["COMMIT"] in ancestors(s)]
    charge = [s for s in one("payments", SERVER) if steps["CHARGE"] in ancestors(s)]
    assert reserve and commit and charge
    for served in (*reserve, *commit, *charge):
        assert parent(served).kind is CLIENT  # orders' instrumented client call

    # order.confirmed, written by the CHARGE step: published and consumed in the same trace
    (consumer,) = one("notifications", CONSUMER, "order.confirmed")
    producer = parent(consumer)
    assert producer.kind is PRODUCER and producer.name == "order.confirmed publish"
    assert parent(producer) is steps["CHARGE"]
    assert str(consumer.attributes["messaging.destination.name"]).endswith(QUEUE)
    # ... as is order.created, written by the request itself
    (created,) = one("notifications", CONSUMER, "order.created")
    assert placing in ancestors(created)
