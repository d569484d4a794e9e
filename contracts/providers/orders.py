"""orders as a provider: HTTP (orders placed through the `place_order` use case) and the
order events, built by the Order aggregate, written by orders' repository into its outbox
and read back by the chassis relay - the message exactly as it would be published."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from decimal import Decimal

from prometheus_client import CollectorRegistry

from chassis import create_db_engine, sqlite_url
from chassis.db import sync_url
from services.orders.__main__ import init
from services.orders.adapters.orm import outbox
from services.orders.adapters.upstreams import Upstreams
from services.orders.app import create_app
from services.orders.domain import (
    Captured,
    Committed,
    Declined,
    Line,
    OutOfStock,
    Priced,
    Refunded,
    Refused,
    Released,
    Reserved,
    Unavailable,
)
from services.orders.domain.model import PUBLISHES, DomainEvent, Order
from services.orders.entrypoints import DEPS
from services.orders.service_layer.orders import PlaceOrder, place_order
from services.orders.service_layer.saga import SagaRunner
from services.orders.service_layer.unit_of_work import SqlAlchemyUnitOfWork
from services.orders.settings import OrdersSettings

from ..harness import serve_aiohttp
from . import CONTRACT_USER, Context, Message, Provider, relay_capture

PRICE = Decimal("9.99")


class PricedOnly(Upstreams):
    """The catalog prices every sku; the rest of the saga waits (not under contract here)."""

    async def prices(self, skus: Sequence[str]) -> Priced:
        return Priced({s: PRICE for s in skus})

    async def reserve(self, order_id: str, lines: Sequence[Line]) -> Unavailable:
        return Unavailable("not under contract")

    async def commit(self, order_id: str) -> Unavailable:
        return Unavailable("not under contract")

    async def release(self, order_id: str) -> Unavailable:
        return Unavailable("not under contract")

    async def charge(
        self, order_id: str, amount: Decimal, currency: str, pm: str, *, owner: str
    ) -> Unavailable:
        return Unavailable("not under contract")

    async def refund(self, order_id: str, payment_id: str) -> Unavailable:
        return Unavailable("not under contract")


class Confirming(PricedOnly):
    """Every step succeeds, the charge captured as `payment_id`: the saga confirms."""

    def __init__(self, payment_id: str) -> None:
        self.payment_id = payment_id

    async def reserve(self, order_id: str, lines: Sequence[Line]) -> Reserved:  # type: ignore[override]
        return Reserved()

    async def charge(  # type: ignore[override]
        self, order_id: str, amount: Decimal, currency: str, pm: str, *, owner: str
    ) -> Captured:
        return Captured(self.payment_id, amount, currency)

    async def commit(self, order_id: str) -> Committed:  # type: ignore[override]
        return Committed()


def _events(outcomes: Sequence[object], priced: bool = True) -> tuple[Order, list[DomainEvent]]:
    """A whole stream (the event store appends from version 1), ending in the event wanted."""
    order, events = Order.place(
        CONTRACT_USER,
        [("SKU-1", 2)],
        "pm_card_ok",
        prices={"SKU-1": PRICE} if priced else None,
    )
    for outcome in outcomes:
        events += order.apply(outcome)  # type: ignore[arg-type]
    return order, events


_CAPTURED = Captured("pay-1", PRICE * 2)
# Every event type orders publishes (PUBLISHES), each at the end of a saga that emits it.
_RUNS: dict[str, Callable[[], tuple[Order, list[DomainEvent]]]] = {
    "order.created": lambda: _events([]),
    "order.priced": lambda: _events([Priced({"SKU-1": PRICE})], priced=False),
    "order.stock_reserved": lambda: _events([Reserved()]),
    "order.payment_captured": lambda: _events([Reserved(), _CAPTURED]),
    "order.payment_declined": lambda: _events([Reserved(), Declined("card declined")]),
    "order.confirmed": lambda: _events([Reserved(), _CAPTURED]),
    "order.stock_committed": lambda: _events([Reserved(), _CAPTURED, Committed()]),
    "order.payment_refunded": lambda: _events([Reserved(), Captured("pay-1", PRICE), Refunded()]),
    "order.stock_released": lambda: _events([Reserved(), Declined("card declined"), Released()]),
    "order.compensating": lambda: _events([Refused("reservation is RELEASED")]),
    "order.rejected": lambda: _events([OutOfStock(("SKU-1",))]),
}
assert set(_RUNS) == set(PUBLISHES), "a producer for every event orders publishes"


def start(ctx: Context) -> Provider:
    db = ctx.workdir / "orders.db"
    url = sqlite_url(db).replace("sqlite://", "sqlite+aiosqlite://")
    settings = OrdersSettings(database_url=url, publish_events=False, saga_poll_interval=60.0)
    init(settings)
    upstreams = PricedOnly()
    app = create_app(settings, verifier=ctx.issuer.async_verifier(), upstreams=upstreams)
    backend = ctx.loop.run(serve_aiohttp(app))
    engine = app[DEPS].engine
    sync_engine = create_db_engine(sync_url(url))

    def order_exists(id: str = "ord-1") -> None:
        cmd = PlaceOrder(CONTRACT_USER, f"contract-{id}", (("SKU-1", 1),), "pm_card_ok")
        placed = ctx.loop.run(place_order(app[DEPS].uow, upstreams, cmd))
        ctx.alias(id, placed.order.id)

    def confirmed_order_exists(id: str = "ord-2", payment_id: str = "pay-1") -> None:
        """Placed, then run through the real saga with every step succeeding."""
        cmd = PlaceOrder(CONTRACT_USER, f"contract-{id}", (("SKU-1", 1),), "pm_card_ok")
        placed = ctx.loop.run(place_order(app[DEPS].uow, upstreams, cmd))
        saga = SagaRunner(app[DEPS].uow, Confirming(payment_id), registry=CollectorRegistry())
        ctx.loop.run(saga.run(placed.order.id))
        ctx.alias(id, placed.order.id)

    def orders_with_events() -> None:
        """Orders whose events are in orders' log: one confirmed through the real saga, one
        only placed. The feed (GET /internal/v1/events) serves them (ADR 0030)."""
        confirmed_order_exists(f"feed-{uuid.uuid4().hex[:8]}")
        order_exists(f"feed-{uuid.uuid4().hex[:8]}")

    def producer(event_type: str) -> Callable[[], Message]:
        def produce() -> Message:
            async def write() -> None:
                order, events = _RUNS[event_type]()
                async with SqlAlchemyUnitOfWork(engine) as uow:
                    await uow.orders.add_events(order, events)
                    await uow.commit()

            ctx.loop.run(write())
            sent = relay_capture(sync_engine, outbox)
            return [m for m in sent if m[1]["routing_key"] == event_type][-1]

        return produce

    def close() -> None:
        ctx.loop.run(backend.stop())  # type: ignore[arg-type]
        sync_engine.dispose()

    return Provider(
        "orders",
        backend,
        {
            "an order exists": order_exists,
            "a confirmed order exists": confirmed_order_exists,
            "orders with events exist": orders_with_events,
        },
        {t: producer(t) for t in _RUNS},
        close=close,
    )
