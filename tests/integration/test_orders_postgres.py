"""Orders on PostgreSQL (asyncpg): placement, the saga, and two runners (as two processes
would) racing over the same sagas - each finishes once, each order is charged once."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from chassis.db import create_async_db_engine
from services.orders.__main__ import init
from services.orders.adapters.orm import outbox
from services.orders.domain import Order, Status
from services.orders.service_layer.orders import PlaceOrder, get_order, place_order
from services.orders.service_layer.saga import SagaDriver, SagaRunner
from services.orders.service_layer.unit_of_work import SqlAlchemyUnitOfWork, UnitOfWorkFactory
from services.orders.settings import OrdersSettings
from tests.support.waiting import wait_until_async
from tests.unit.orders.fakes import FakeUpstreams

pytestmark = pytest.mark.postgres


def sql(engine: AsyncEngine) -> UnitOfWorkFactory:
    """The app's unit of work, on the test's engine."""
    return lambda: SqlAlchemyUnitOfWork(engine)


def asyncpg_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql+asyncpg://", 1)


async def test_two_drivers_finish_every_saga_exactly_once(postgres_url: str) -> None:
    url = asyncpg_url(postgres_url)
    init(OrdersSettings(database_url=url, publish_events=False))
    one, two = create_async_db_engine(url), create_async_db_engine(url)
    upstreams = FakeUpstreams(stock={"BK-0001": 15, "EL-0001": 1000, "KT-0001": 1000})
    try:
        placed = []
        for i in range(30):
            pm = "pm_card_declined" if i % 5 == 0 else "pm_card_ok"
            cmd = PlaceOrder(f"user{i % 3}", f"k{i}", (("BK-0001", 1), ("EL-0001", 2)), pm)
            placed.append((await place_order(sql(one), upstreams, cmd)).order)
        drivers = [
            SagaDriver(SagaRunner(sql(engine), upstreams), poll_interval=0.02, concurrency=8)
            for engine in (one, two)
        ]
        for d in drivers:
            d.start()

        async def all_finished() -> list[Order] | None:
            orders = [await get_order(sql(one), o.owner, o.id) for o in placed]
            return orders if all(o.finished for o in orders) else None

        orders = await wait_until_async(all_finished, 20, "every saga finished", interval=0.05)
        for d in drivers:
            await d.stop()
        confirmed = [o for o in orders if o.status is Status.CONFIRMED]
        rejected = [o for o in orders if o.status is Status.REJECTED]
        assert len(confirmed) + len(rejected) == 30
        assert {o.reason.split(":")[0] for o in rejected if o.reason} <= {
            "payment declined",
            "out of stock",
        }
        # Stock: what left equals what confirmed orders hold; money: one charge per order.
        assert 15 - upstreams.stock["BK-0001"] == len(confirmed)
        assert len(upstreams.charges) == len(confirmed)
        assert upstreams.captured_total() == sum(o.total for o in confirmed if o.total)
        async with one.connect() as conn:
            counts = dict(
                (
                    await conn.execute(select(outbox.c.type, func.count()).group_by(outbox.c.type))
                ).all()
            )
        outcomes = ("order.created", "order.confirmed", "order.rejected")
        assert {t: n for t, n in counts.items() if t in outcomes} == {
            "order.created": 30,
            "order.confirmed": len(confirmed),
            "order.rejected": len(rejected),
        }
        assert counts["order.stock_committed"] == len(confirmed)  # every saga's last step
    finally:
        await one.dispose()
        await two.dispose()
