"""Orders' event store on PostgreSQL (asyncpg): two writers never both append version N; a
saga whose catalog keeps answering a product without a price ends REJECTED after
ORDERS_SAGA_STEP_TIMEOUT, as events, with its row equal to the fold; migration 0002
synthesizes streams for orders already there."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from sqlalchemy.ext.asyncio import AsyncEngine

from chassis import migrations
from chassis.db import create_async_db_engine
from services.orders.__main__ import init
from services.orders.adapters.eventlog import STORE
from services.orders.adapters.orm import metadata
from services.orders.domain import Order, Status
from services.orders.migrations import MIGRATIONS_DIR
from services.orders.service_layer.orders import PlaceOrder, place_order
from services.orders.service_layer.saga import SagaDriver, SagaRunner
from services.orders.service_layer.unit_of_work import SqlAlchemyUnitOfWork, UnitOfWorkFactory
from services.orders.settings import OrdersSettings
from tests.support.eventstore import LOG, create, race_two_writers
from tests.support.waiting import wait_until_async
from tests.unit.orders.test_event_sourcing import Flaky, assert_cache_is_fold

pytestmark = pytest.mark.postgres


def asyncpg_url(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql+asyncpg://", 1)


def sql(engine: AsyncEngine) -> UnitOfWorkFactory:
    return lambda: SqlAlchemyUnitOfWork(engine)


async def test_two_writers_never_both_append_version_n(postgres_url: str) -> None:
    engine = create_async_db_engine(asyncpg_url(postgres_url))
    try:
        await create(engine)
        for _ in range(5):  # the race each time on a fresh stream
            async with engine.begin() as conn:
                await conn.execute(LOG.delete())
            assert await race_two_writers(engine) == ["appended", "conflict"]
    finally:
        await engine.dispose()


async def test_two_writers_of_one_order_stream_on_postgres(postgres_url: str) -> None:
    url = asyncpg_url(postgres_url)
    init(OrdersSettings(database_url=url, publish_events=False))
    engine = create_async_db_engine(url)
    try:
        assert await race_two_writers(engine, STORE) == ["appended", "conflict"]
    finally:
        await engine.dispose()


async def test_a_saga_stuck_on_a_product_without_a_price_is_rejected(postgres_url: str) -> None:
    url = asyncpg_url(postgres_url)
    init(OrdersSettings(database_url=url, publish_events=False))
    engine = create_async_db_engine(url)
    up = Flaky(broken={"prices"})
    registry = CollectorRegistry()
    runner = SagaRunner(
        sql(engine), up, retry_base=0.01, retry_max=0.05, step_timeout=0.2, registry=registry
    )
    driver = SagaDriver(runner, poll_interval=0.02, gauge_interval=0.0)
    try:
        placed = [
            (
                await place_order(
                    sql(engine), up, PlaceOrder("alice", f"k{i}", (("BK-0001", 1),), "pm_card_ok")
                )
            ).order
            for i in range(3)
        ]
        assert await runner.refresh_pending() == {("PRICE", "lt_1m"): 3}
        driver.start()

        async def all_rejected() -> list[Order] | None:
            async with SqlAlchemyUnitOfWork(engine) as unit:
                found = [await unit.orders.get(o.id) for o in placed]
            orders = [f.order for f in found if f is not None]
            return orders if all(o.status is Status.REJECTED for o in orders) else None

        orders = await wait_until_async(all_rejected, 20, "every saga rejected", interval=0.05)
        await driver.stop()
        for order in orders:
            assert (
                order.reason
                == "price step timed out (last error: catalog: product without a price)"
            )
            await assert_cache_is_fold(engine, order.id)
            async with SqlAlchemyUnitOfWork(engine) as unit:
                kinds = [e.type for e in await unit.orders.history(order.id)]
            assert kinds == ["order.created", "order.rejected"]
        await runner.refresh_pending()
        assert (
            registry.get_sample_value("orders_saga_pending", {"step": "PRICE", "age": "lt_1m"}) == 0
        )
        async with SqlAlchemyUnitOfWork(engine) as unit:
            events, last = await unit.orders.feed(0, 1000)
        assert [e.position for e in events] == sorted(e.position for e in events)
        assert len(events) == 6 and last == events[-1].position
    finally:
        await driver.stop()
        await engine.dispose()


async def test_migration_0002_synthesizes_streams_on_postgres(postgres_url: str) -> None:
    url = asyncpg_url(postgres_url)
    init(OrdersSettings(database_url=url, publish_events=False))
    engine = create_async_db_engine(url)
    up = Flaky(stock={"BK-0001": 100, "EL-0001": 100, "KT-0001": 10})
    runner = SagaRunner(sql(engine), up, registry=CollectorRegistry())
    ids: list[str] = []
    try:
        for key, broken, pm in (
            ("done", set(), "pm_card_ok"),
            ("charge", {"charge"}, "pm_card_ok"),
            ("release", {"release"}, "pm_card_declined"),
            ("declined", set(), "pm_card_declined"),
        ):
            up.broken = broken
            cmd = PlaceOrder("alice", key, (("BK-0001", 2),), pm)
            order = (await place_order(sql(engine), up, cmd)).order
            await runner.run(order.id)
            ids.append(order.id)
        await engine.dispose()
        migrations.downgrade(metadata, MIGRATIONS_DIR, url, "0001")
        migrations.upgrade(metadata, MIGRATIONS_DIR, url)
        seen: set[Any] = set()
        for order_id in ids:
            seen.add((await assert_cache_is_fold(engine, order_id)).status)
        assert seen == {Status.CONFIRMED, Status.PENDING, Status.REJECTED}
    finally:
        await engine.dispose()
