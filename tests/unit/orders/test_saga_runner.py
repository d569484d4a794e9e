"""The saga runner on a real (SQLite) database with fake upstreams: persistence, outbox,
leases, resumption after a crash, and no second effect anywhere."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from services.orders.adapters.orm import orders, outbox
from services.orders.domain import Order, Outcome, Status, Step
from services.orders.service_layer.orders import (
    IdempotencyKeyReused,
    OrderNotFound,
    PlaceOrder,
    UnknownProducts,
    get_order,
    list_orders,
    place_order,
)
from services.orders.service_layer.saga import SagaDriver, SagaRunner
from services.orders.service_layer.unit_of_work import SqlAlchemyUnitOfWork, UnitOfWorkFactory
from tests.support.waiting import wait_until_async

from .fakes import FakeUpstreams


def sql(engine: AsyncEngine) -> UnitOfWorkFactory:
    """The app's unit of work, on the test's engine."""
    return lambda: SqlAlchemyUnitOfWork(engine)


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def cmd(key: str = "k1", pm: str = "pm_card_ok", **kw: Any) -> PlaceOrder:
    items = kw.pop("items", (("BK-0001", 2), ("EL-0001", 1)))
    return PlaceOrder(owner=kw.pop("owner", "alice"), key=key, items=items, payment_method=pm)


HAPPY = [
    "order.created",
    "order.stock_reserved",
    "order.payment_captured",
    "order.confirmed",
    "order.stock_committed",
]


async def events(engine: AsyncEngine) -> list[tuple[str, dict[str, Any]]]:
    async with engine.connect() as conn:
        rows = await conn.execute(select(outbox.c.type, outbox.c.data).order_by(outbox.c.seq))
        return [(r.type, {k: v for k, v in r.data.items() if k != "_envelope"}) for r in rows]


async def test_place_then_run_confirms_and_writes_the_outbox(
    engine: AsyncEngine, upstreams: FakeUpstreams
) -> None:
    placed = await place_order(sql(engine), upstreams, cmd())
    assert not placed.replayed and placed.order.step is Step.RESERVE
    assert placed.order.total == Decimal("109.79")
    runner = SagaRunner(sql(engine), upstreams)
    order = await runner.run(placed.order.id)
    assert order is not None and order.status is Status.CONFIRMED and order.finished
    stored = await get_order(sql(engine), "alice", order.id)
    assert stored.status is Status.CONFIRMED and stored.payment_id == "pay-1"
    assert [ln.unit_price for ln in stored.lines] == [Decimal("39.90"), Decimal("29.99")]
    assert [t for t, _ in await events(engine)] == HAPPY
    assert upstreams.reservations[order.id][0] == "COMMITTED"
    assert upstreams.stock["BK-0001"] == 8
    assert upstreams.owners == {f"charge-{order.id}": "alice"}  # the payment is alice's
    assert await runner.run(order.id) is None  # finished: nothing to claim


async def test_idempotent_placement(engine: AsyncEngine, upstreams: FakeUpstreams) -> None:
    first = await place_order(sql(engine), upstreams, cmd())
    again = await place_order(sql(engine), upstreams, cmd())
    assert again.replayed and again.order.id == first.order.id
    with pytest.raises(IdempotencyKeyReused):
        await place_order(sql(engine), upstreams, cmd(pm="pm_card_declined"))
    other = await place_order(sql(engine), upstreams, cmd(owner="bob"))  # keys are per owner
    assert other.order.id != first.order.id
    assert [t for t, _ in await events(engine)] == ["order.created", "order.created"]


async def test_concurrent_placements_with_one_key_make_one_order(
    engine: AsyncEngine, upstreams: FakeUpstreams
) -> None:
    results = await asyncio.gather(*(place_order(sql(engine), upstreams, cmd()) for _ in range(8)))
    assert len({r.order.id for r in results}) == 1
    assert sum(not r.replayed for r in results) == 1


async def test_unknown_sku_is_refused_and_stores_nothing(
    engine: AsyncEngine, upstreams: FakeUpstreams
) -> None:
    with pytest.raises(UnknownProducts) as info:
        await place_order(sql(engine), upstreams, cmd(items=(("NO-SUCH", 1),)))
    assert info.value.skus == ("NO-SUCH",)
    assert await events(engine) == []


async def test_catalog_down_at_placement_prices_later(
    engine: AsyncEngine, upstreams: FakeUpstreams
) -> None:
    upstreams.down.add("catalog")
    placed = await place_order(sql(engine), upstreams, cmd())
    assert placed.order.step is Step.PRICE and placed.order.total is None
    clock = Clock()
    runner = SagaRunner(sql(engine), upstreams, clock=clock)
    waiting = await runner.run(placed.order.id)
    assert waiting is not None and waiting.step is Step.PRICE and waiting.attempts == 1
    upstreams.down.clear()
    clock.now += 60
    done = await runner.run(placed.order.id)
    assert done is not None and done.status is Status.CONFIRMED
    assert done.total == Decimal("109.79")
    stored = await get_order(sql(engine), "alice", done.id)
    assert [ln.unit_price for ln in stored.lines] == [Decimal("39.90"), Decimal("29.99")]


async def test_declined_card_releases_stock_and_rejects(
    engine: AsyncEngine, upstreams: FakeUpstreams
) -> None:
    placed = await place_order(sql(engine), upstreams, cmd(pm="pm_card_declined"))
    order = await SagaRunner(sql(engine), upstreams).run(placed.order.id)
    assert order is not None and order.status is Status.REJECTED
    assert order.reason == "payment declined: card declined"
    assert upstreams.stock["BK-0001"] == 10 and upstreams.charges == {}
    assert upstreams.reservations[order.id][0] == "RELEASED"
    (rejected,) = [d for t, d in await events(engine) if t == "order.rejected"]
    assert rejected == {"order_id": order.id, "owner": "alice", "reason": order.reason}


async def test_out_of_stock_rejects(engine: AsyncEngine, upstreams: FakeUpstreams) -> None:
    placed = await place_order(sql(engine), upstreams, cmd(items=(("KT-0001", 11),)))
    order = await SagaRunner(sql(engine), upstreams).run(placed.order.id)
    assert order is not None and order.status is Status.REJECTED
    assert order.reason == "out of stock: KT-0001" and upstreams.calls["charge"] == 0


async def test_payment_mismatch_is_refunded_and_released(
    engine: AsyncEngine, upstreams: FakeUpstreams
) -> None:
    upstreams.captured_amount_delta = Decimal("-1.00")
    placed = await place_order(sql(engine), upstreams, cmd())
    order = await SagaRunner(sql(engine), upstreams).run(placed.order.id)
    assert order is not None and order.status is Status.REJECTED
    assert upstreams.refunds == {"pay-1"} and upstreams.captured_total() == 0
    assert upstreams.stock["BK-0001"] == 10


async def test_payments_down_keeps_the_order_pending_then_resumes_without_double_charge(
    engine: AsyncEngine, upstreams: FakeUpstreams
) -> None:
    clock = Clock()
    runner = SagaRunner(sql(engine), upstreams, clock=clock, retry_base=1.0, retry_max=8.0)
    placed = await place_order(sql(engine), upstreams, cmd())
    upstreams.down.add("payments")
    for _ in range(3):
        order = await runner.run(placed.order.id)
        assert order is not None and order.status is Status.PENDING
        assert order.step is Step.CHARGE
        assert await runner.due(10) == []  # backing off
        clock.now += 60
    assert order.attempts == 3 and order.last_error == "payments: down"
    assert await runner.due(10) == [placed.order.id]
    upstreams.down.clear()
    order = await runner.run(placed.order.id)
    assert order is not None and order.status is Status.CONFIRMED
    assert len(upstreams.charges) == 1 and upstreams.captured_total() == order.total


async def test_two_runners_never_run_one_saga_at_once(
    engine: AsyncEngine, upstreams: FakeUpstreams
) -> None:
    placed = await place_order(sql(engine), upstreams, cmd())
    gate, entered = asyncio.Event(), asyncio.Event()
    inside = 0
    most = 0

    class Slow(SagaRunner):
        async def perform(self, order: Order) -> Outcome:
            nonlocal inside, most
            inside += 1
            most = max(most, inside)
            entered.set()
            await gate.wait()
            inside -= 1
            return await super().perform(order)

    a, b = Slow(sql(engine), upstreams), Slow(sql(engine), upstreams)
    task = asyncio.create_task(a.run(placed.order.id))
    await entered.wait()
    assert await b.run(placed.order.id) is None  # a holds the lease
    gate.set()
    order = await task
    assert order is not None and order.status is Status.CONFIRMED and most == 1


async def test_a_crash_after_charging_resumes_once_the_lease_runs_out(
    engine: AsyncEngine, upstreams: FakeUpstreams
) -> None:
    """The process dies after payments captured but before the saga stored it."""
    clock = Clock()
    placed = await place_order(sql(engine), upstreams, cmd())

    class Dies(SagaRunner):
        async def perform(self, order: Order) -> Outcome:
            outcome = await super().perform(order)
            if order.step is Step.CHARGE:
                raise SystemExit("killed")  # nothing below runs, the lease stays
            return outcome

    with pytest.raises(SystemExit):
        await Dies(sql(engine), upstreams, clock=clock, lease=30).run(placed.order.id)
    survivor = SagaRunner(sql(engine), upstreams, clock=clock, lease=30)
    assert await survivor.due(10) == [] and await survivor.run(placed.order.id) is None
    clock.now += 31
    assert await survivor.due(10) == [placed.order.id]
    order = await survivor.run(placed.order.id)
    assert order is not None and order.status is Status.CONFIRMED
    assert upstreams.calls["charge"] == 2 and len(upstreams.charges) == 1
    assert [t for t, _ in await events(engine)] == HAPPY


async def test_a_stale_runner_cannot_overwrite_a_newer_state(
    engine: AsyncEngine, upstreams: FakeUpstreams
) -> None:
    clock = Clock()
    placed = await place_order(sql(engine), upstreams, cmd())
    slow_gate, entered = asyncio.Event(), asyncio.Event()

    class Stale(SagaRunner):
        async def perform(self, order: Order) -> Outcome:
            entered.set()
            await slow_gate.wait()
            return await super().perform(order)

    stale = asyncio.create_task(
        Stale(sql(engine), upstreams, clock=clock, lease=30).run(placed.order.id)
    )
    await entered.wait()
    clock.now += 31  # its lease ran out while it was stuck
    order = await SagaRunner(sql(engine), upstreams, clock=clock).run(placed.order.id)
    assert order is not None and order.status is Status.CONFIRMED
    slow_gate.set()
    assert await stale is None  # lost the lease: wrote nothing
    assert [t for t, _ in await events(engine)] == HAPPY


async def test_driver_runs_new_sagas_and_resumes_unfinished_ones(
    engine: AsyncEngine, upstreams: FakeUpstreams
) -> None:
    left = await place_order(sql(engine), upstreams, cmd("left-over"))  # as if before a restart
    runner = SagaRunner(sql(engine), upstreams)
    driver = SagaDriver(runner, poll_interval=0.02)
    driver.start()
    try:
        new = await place_order(sql(engine), upstreams, cmd("new"))
        driver.kick(new.order.id)

        async def all_finished() -> list[Any] | None:
            page, _ = await list_orders(sql(engine), "alice")
            return page if all(o.finished for o in page) else None

        page = await wait_until_async(all_finished, 5, "both sagas finished", interval=0.01)
        assert {o.id for o in page} == {left.order.id, new.order.id}
        assert {o.status for o in page} == {Status.CONFIRMED}
    finally:
        await driver.stop()


async def test_stop_gives_back_the_leases(engine: AsyncEngine, upstreams: FakeUpstreams) -> None:
    placed = await place_order(sql(engine), upstreams, cmd())
    runner = SagaRunner(sql(engine), upstreams, instance_id="me")
    async with engine.begin() as conn:
        await conn.execute(update(orders).values(lease_owner="me", lease_until=runner.clock() + 60))
    assert await SagaRunner(sql(engine), upstreams).run(placed.order.id) is None
    assert await runner.release_leases() == 1
    order = await SagaRunner(sql(engine), upstreams).run(placed.order.id)
    assert order is not None and order.finished


async def test_owner_only_and_listing(engine: AsyncEngine, upstreams: FakeUpstreams) -> None:
    ids = [(await place_order(sql(engine), upstreams, cmd(f"k{i}"))).order.id for i in range(5)]
    with pytest.raises(OrderNotFound):
        await get_order(sql(engine), "mallory", ids[0])
    seen: list[str] = []
    before = None
    while True:
        page, before = await list_orders(sql(engine), "alice", before=before, limit=2)
        seen += [o.id for o in page]
        if before is None:
            break
    assert seen == ids[::-1]
    assert (await list_orders(sql(engine), "alice", status=Status.CONFIRMED))[0] == []
