"""Orders as event streams on a real (SQLite) database: after every saga step of every path
the cached `orders` row equals the fold of the order's events; every event is in the outbox
with its stream, version and position; step timeouts end in REJECTED, as events; migration
0002 gives existing orders streams whose fold equals their rows."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from prometheus_client import CollectorRegistry
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from chassis import migrations
from chassis.messaging.events import Event
from services.orders.adapters.eventlog import STORE
from services.orders.adapters.orm import metadata, order_events, outbox
from services.orders.domain import (
    Line,
    Order,
    Status,
    Step,
    Unavailable,
)
from services.orders.migrations import MIGRATIONS_DIR
from services.orders.service_layer.orders import PlaceOrder, place_order
from services.orders.service_layer.saga import SagaRunner, _Then
from services.orders.service_layer.unit_of_work import SqlAlchemyUnitOfWork, UnitOfWorkFactory
from services.orders.settings import OrdersSettings
from tests.support.eventstore import race_two_writers
from tests.support.relay import captured_messages

from .fakes import FakeUpstreams


def sql(engine: AsyncEngine) -> UnitOfWorkFactory:
    return lambda: SqlAlchemyUnitOfWork(engine)


@dataclass
class Flaky(FakeUpstreams):
    """The fakes, with some calls answering Unavailable (`broken`: method names) and the
    catalog optionally answering a product without a price (as after a broken deployment)."""

    broken: set[str] = field(default_factory=set)

    def _out(self, name: str, error: str) -> Unavailable | None:
        return Unavailable(error) if name in self.broken else None

    async def prices(self, skus: Sequence[str]) -> Any:
        return self._out("prices", "catalog: product without a price") or await super().prices(skus)

    async def commit(self, order_id: str) -> Any:
        return self._out("commit", "inventory: 503") or await super().commit(order_id)

    async def release(self, order_id: str) -> Any:
        return self._out("release", "inventory: 503") or await super().release(order_id)

    async def refund(self, order_id: str, payment_id: str) -> Any:
        return self._out("refund", "payments: 503") or await super().refund(order_id, payment_id)

    async def reserve(self, order_id: str, lines: Sequence[Line]) -> Any:
        return self._out("reserve", "inventory: 503") or await super().reserve(order_id, lines)

    async def charge(
        self, order_id: str, amount: Decimal, currency: str, pm: str, *, owner: str
    ) -> Any:
        return self._out("charge", "payments: 503") or await super().charge(
            order_id, amount, currency, pm, owner=owner
        )


class Wall:
    """The runner's wall clock: now, plus however far a test moved it on."""

    def __init__(self) -> None:
        self.ahead = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.ahead


async def assert_cache_is_fold(engine: AsyncEngine, order_id: str) -> Order:
    async with SqlAlchemyUnitOfWork(engine) as unit:
        stored = await unit.orders.get(order_id)
        events = await unit.orders.history(order_id)
    assert stored is not None
    folded = Order.from_events(events)
    assert stored.order.snapshot() == folded.snapshot()
    assert [e.version for e in events] == list(range(1, len(events) + 1))
    return stored.order


class Checked(SagaRunner):
    """Checks the row against the fold after every step it stores."""

    def __init__(self, engine: AsyncEngine, upstreams: FakeUpstreams, **kw: Any) -> None:
        super().__init__(sql(engine), upstreams, registry=CollectorRegistry(), **kw)
        self.engine = engine
        self.checked = 0

    async def _step(self, order: Order, span: Any) -> _Then:
        then = await super()._step(order, span)
        if then is not _Then.LOST:
            await assert_cache_is_fold(self.engine, order.id)
            self.checked += 1
        return then


def cmd(
    key: str, pm: str = "pm_card_ok", items: Any = (("BK-0001", 2), ("EL-0001", 1))
) -> PlaceOrder:
    return PlaceOrder(owner="alice", key=key, items=items, payment_method=pm)


async def types_of(engine: AsyncEngine, order_id: str) -> list[str]:
    async with SqlAlchemyUnitOfWork(engine) as unit:
        return [e.type for e in await unit.orders.history(order_id)]


async def place(engine: AsyncEngine, up: FakeUpstreams, key: str, **kw: Any) -> Order:
    order = (await place_order(sql(engine), up, cmd(key, **kw))).order
    await assert_cache_is_fold(engine, order.id)
    return order


async def test_happy_path_priced_by_the_saga(engine: AsyncEngine) -> None:
    up = Flaky(broken={"prices"})
    order = await place(engine, up, "k1")  # the catalog cannot price it now: PRICE later
    assert order.step is Step.PRICE
    up.broken.clear()
    runner = Checked(engine, up)
    done = await runner.run(order.id)
    assert done is not None and done.status is Status.CONFIRMED and done.finished
    assert runner.checked == 4  # PRICE, RESERVE, CHARGE, COMMIT
    assert await types_of(engine, order.id) == [
        "order.created",
        "order.priced",
        "order.stock_reserved",
        "order.payment_captured",
        "order.confirmed",
        "order.stock_committed",
    ]


async def test_rejections_and_compensations(engine: AsyncEngine) -> None:
    up = Flaky(stock={"BK-0001": 1, "EL-0001": 10, "KT-0001": 10})
    runner = Checked(engine, up)
    out_of_stock = await place(engine, up, "k1")
    declined = await place(engine, up, "k2", pm="pm_card_declined", items=(("EL-0001", 1),))
    up.captured_amount_delta = Decimal("1.00")
    refunded = await place(engine, up, "k3", items=(("EL-0001", 1),))
    expected = {
        out_of_stock.id: ["order.created", "order.rejected"],
        declined.id: [
            "order.created",
            "order.stock_reserved",
            "order.payment_declined",
            "order.stock_released",
            "order.rejected",
        ],
        refunded.id: [
            "order.created",
            "order.stock_reserved",
            "order.payment_captured",
            "order.payment_refunded",
            "order.stock_released",
            "order.rejected",
        ],
    }
    for order_id, kinds in expected.items():
        done = await runner.run(order_id)
        assert done is not None and done.status is Status.REJECTED
        assert await types_of(engine, order_id) == kinds
    assert up.stock["EL-0001"] == 10 and up.refunds == {"pay-1"}


async def test_unknown_sku_when_pricing_later(engine: AsyncEngine) -> None:
    up = Flaky(broken={"prices"})
    order = await place(engine, up, "k1")
    up.broken.clear()
    del up.prices_by_sku["EL-0001"]
    done = await Checked(engine, up).run(order.id)
    assert done is not None and done.reason == "unknown sku: EL-0001"
    assert await types_of(engine, order.id) == ["order.created", "order.rejected"]


async def test_every_event_is_in_the_outbox_with_its_place(engine: AsyncEngine) -> None:
    up = Flaky()
    order = await place(engine, up, "k1")
    await Checked(engine, up).run(order.id)
    async with engine.connect() as conn:
        log = (await conn.execute(select(order_events).order_by(order_events.c.position))).all()
    sent = captured_messages(engine.url, outbox)
    assert [m["id"] for m in sent] == [r.event_id for r in log]
    for message, row in zip(sent, log, strict=True):
        assert message["stream"] == order.id and message["version"] == row.version
        assert message["position"] == row.position and message["type"] == row.type
        assert "_envelope" not in message["data"]
        assert Event.from_message(message, {}).position == row.position


async def test_a_step_that_keeps_failing_times_out_and_compensates(engine: AsyncEngine) -> None:
    """PRICE (a product without a price), RESERVE and CHARGE, each unavailable past the
    timeout: rejected with the reason, what was done compensated, all recorded as events."""
    wall = Wall()
    up = Flaky(broken={"prices"})
    runner = Checked(engine, up, step_timeout=60.0, wall=wall)
    unpriced = await place(engine, up, "k1")
    up.broken = {"reserve"}
    unreserved = await place(engine, up, "k2")
    up.broken = {"charge"}
    uncharged = await place(engine, up, "k3")
    for order_id, broken in (
        (unpriced.id, "prices"),
        (unreserved.id, "reserve"),
        (uncharged.id, "charge"),
    ):
        up.broken = {broken}
        waiting = await runner.run(order_id)
        assert waiting is not None and waiting.status is Status.PENDING and waiting.attempts == 1
    counts = await runner.refresh_pending()
    assert counts == {("PRICE", "lt_1m"): 1, ("RESERVE", "lt_1m"): 1, ("CHARGE", "lt_1m"): 1}
    wall.ahead = timedelta(seconds=61)
    assert await runner.refresh_pending() == {
        ("PRICE", "1m_5m"): 1,
        ("RESERVE", "1m_5m"): 1,
        ("CHARGE", "1m_5m"): 1,
    }
    up.broken = {"prices"}
    done = await runner.run(unpriced.id)
    assert done is not None and done.status is Status.REJECTED
    assert done.reason == "price step timed out (last error: catalog: product without a price)"
    assert await types_of(engine, unpriced.id) == ["order.created", "order.rejected"]
    # RESERVE: the reservation may exist (a timeout is no answer), so it is released first;
    # a release that fails is retried (compensations never time out), then the order ends.
    up.broken = {"reserve", "release"}
    waiting = await runner.run(unreserved.id)
    assert waiting is not None and waiting.step is Step.RELEASE and waiting.status is Status.PENDING
    assert waiting.reason == "reserve step timed out (last error: inventory: 503)"
    assert ("RELEASE", "lt_1m") in await runner.refresh_pending()
    up.broken = set()
    done = await runner.run(unreserved.id)
    assert done is not None and done.status is Status.REJECTED
    assert await types_of(engine, unreserved.id) == [
        "order.created",
        "order.compensating",
        "order.stock_released",
        "order.rejected",
    ]
    up.broken = {"charge"}
    done = await runner.run(uncharged.id)
    assert done is not None and done.status is Status.REJECTED
    assert done.reason == "charge step timed out (last error: payments: 503)"
    assert await types_of(engine, uncharged.id) == [
        "order.created",
        "order.stock_reserved",
        "order.payment_declined",
        "order.stock_released",
        "order.rejected",
    ]
    assert up.stock == {"BK-0001": 10, "EL-0001": 10, "KT-0001": 10}  # all released
    assert await runner.refresh_pending() == {}


async def test_the_migration_gives_existing_orders_streams_that_fold_to_their_rows(
    engine: AsyncEngine, settings: OrdersSettings
) -> None:
    """Orders in every state, the log dropped (down to 0001), then migrated again: 0002
    synthesizes each order's stream from its row."""
    up = Flaky(stock={"BK-0001": 100, "EL-0001": 100, "KT-0001": 10})
    runner = SagaRunner(sql(engine), up, registry=CollectorRegistry())
    made: list[Order] = []

    async def order(key: str, broken: set[str], **kw: Any) -> None:
        up.broken = broken
        placed = await place(engine, up, key, **kw)
        await runner.run(placed.id)
        made.append(placed)

    await order("done", set())
    await order("price", {"prices"})
    await order("reserve", {"reserve"})
    await order("charge", {"charge"})
    await order("commit", {"commit"})
    await order("release", {"release"}, pm="pm_card_declined")
    up.captured_amount_delta = Decimal("1.00")
    await order("refund", {"refund"})
    await order("refunded", set())
    up.captured_amount_delta = Decimal("0")
    await order("declined", set(), pm="pm_card_declined")
    await order("out-of-stock", set(), items=(("BK-0001", 500),))
    await engine.dispose()
    migrations.downgrade(metadata, MIGRATIONS_DIR, settings.database_url, "0001")
    assert migrations.upgrade(metadata, MIGRATIONS_DIR, settings.database_url)[:1] == ["0002"]
    steps = set()
    for placed in made:
        row = await assert_cache_is_fold(engine, placed.id)
        steps.add((row.status, row.step))
        async with SqlAlchemyUnitOfWork(engine) as unit:
            assert {e.cause for e in await unit.orders.history(placed.id)} == {"migration 0002"}
    assert steps >= {
        (Status.CONFIRMED, Step.DONE),
        (Status.PENDING, Step.PRICE),
        (Status.PENDING, Step.RESERVE),
        (Status.PENDING, Step.CHARGE),
        (Status.CONFIRMED, Step.COMMIT),
        (Status.PENDING, Step.RELEASE),
        (Status.PENDING, Step.REFUND),
        (Status.REJECTED, Step.DONE),
    }
    # The synthesized streams go on: the saga appends after them.
    up.broken = set()
    for placed in made:
        finished = await Checked(engine, up).run(placed.id)
        assert finished is None or finished.finished


async def test_a_v1_order_created_is_read_through_its_upcaster(engine: AsyncEngine) -> None:
    """An `order.created` stored before payment_method was recorded (schema v1) still folds."""
    v1 = {
        "order_id": "o-old",
        "owner": "alice",
        "items": [{"sku": "BK-0001", "quantity": 1, "unit_price": "39.90"}],
        "total": "39.90",
        "currency": "EUR",
    }
    async with engine.begin() as conn:
        await conn.execute(
            order_events.insert().values(
                event_id="e-old",
                stream_id="o-old",
                version=1,
                type="order.created",
                schema_version=1,
                data=v1,
                occurred_at="2026-01-01T00:00:00.000000Z",
                cause="before ADR 0029",
            )
        )
    async with SqlAlchemyUnitOfWork(engine) as unit:
        (event,) = await unit.orders.history("o-old")
    assert event.schema_version == 2 and event.data["payment_method"] == "unknown"
    order = Order.from_events([event])
    assert order.payment_method == "unknown" and order.total == Decimal("39.90")
    assert order.step is Step.RESERVE and order.created_at == datetime(2026, 1, 1, tzinfo=UTC)


async def test_two_writers_of_one_order_stream_never_both_append_version_n(
    engine: AsyncEngine,
) -> None:
    """Orders' own store and `order_events` table: the loser's transaction appends nothing."""
    assert await race_two_writers(engine, STORE) == ["appended", "conflict"]
    async with engine.connect() as conn:
        versions = (await conn.execute(select(order_events.c.version))).scalars().all()
        published = (await conn.execute(select(outbox.c.id))).scalars().all()
    assert sorted(versions) == [1, 2] and len(published) == 2  # and one outbox row each
