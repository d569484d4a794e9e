"""Inventory on real PostgreSQL (asyncpg): row locks keep concurrent reservations honest."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import Engine

from chassis import create_db_engine, sync_url
from services.inventory.__main__ import init
from services.inventory.app import create_app
from services.inventory.settings import InventorySettings
from tests.support.tokens import TestIssuer
from tests.unit.inventory.conftest import Api, outbox_events

pytestmark = pytest.mark.postgres


@pytest.fixture
def settings(postgres_url: str) -> InventorySettings:
    url = postgres_url.replace("postgresql+psycopg://", "postgresql+asyncpg://", 1)
    return InventorySettings(database_url=url, relay=False, low_stock_threshold=5)


@pytest.fixture
def db(settings: InventorySettings) -> Iterator[Engine]:
    assert init(settings, seed=True)["seeded"] == 20
    assert init(settings, seed=True)["seeded"] == 0  # idempotent
    engine = create_db_engine(sync_url(settings.database_url))
    yield engine
    engine.dispose()


@pytest.fixture
async def api(aiohttp_client: Any, settings: InventorySettings, db: Engine) -> Api:
    issuer = TestIssuer()
    client = await aiohttp_client(create_app(settings, verifier=issuer.async_verifier()))
    return Api(client, issuer)


async def test_concurrent_reserves_never_oversell_on_postgres(api: Api, db: Engine) -> None:
    await api.set_stock("A", 25)
    await api.set_stock("B", 10)
    rnd = random.Random(7)
    orders = {
        f"o{i}": sorted(
            [("A", rnd.randint(1, 3))] + ([("B", rnd.randint(1, 2))] if i % 3 else []),
            reverse=bool(i % 2),  # items in both orders: locks must still not deadlock
        )
        for i in range(60)
    }
    results = await asyncio.gather(*(api.reserve(o, *items) for o, items in orders.items()))
    won = [o for o, r in zip(orders, results, strict=True) if r.status == 201]
    assert {r.status for r in results} <= {201, 409}
    held = {"A": 0, "B": 0}
    for order_id in won:
        for sku, qty in orders[order_id]:
            held[sku] += qty
    for sku, on_hand in (("A", 25), ("B", 10)):
        level = await api.stock(sku)
        assert level["reserved"] == held[sku] <= on_hand and level["available"] >= 0
    assert len([t for t, _ in outbox_events(db) if t == "stock.low"]) <= 2  # once per sku

    # commit half, release the rest, twice each, concurrently
    half = len(won) // 2
    commits = [api.commit(o) for o in won[:half] for _ in range(2)]
    releases = [api.release(o) for o in won[half:] for _ in range(2)]
    done = await asyncio.gather(*commits, *releases)
    assert {r.status for r in done} == {200}
    shipped = {"A": 0, "B": 0}
    for order_id in won[:half]:
        for sku, qty in orders[order_id]:
            shipped[sku] += qty
    assert await api.stock("A") == {
        "sku": "A",
        "on_hand": 25 - shipped["A"],
        "reserved": 0,
        "available": 25 - shipped["A"],
    }


async def test_idempotency_and_tombstones_on_postgres(api: Api) -> None:
    assert (await api.stock("BK-0001"))["on_hand"] == 50  # seeded from the catalog's demo
    results = await asyncio.gather(*(api.reserve("same", ("BK-0001", 2)) for _ in range(10)))
    assert {r.status for r in results} == {201}
    assert (await api.stock("BK-0001"))["reserved"] == 2
    assert (await api.release("ghost")).status == 200
    assert (await api.reserve("ghost", ("BK-0001", 1))).status == 409
    short = await api.reserve("big", ("BK-0001", 49), ("OD-0002", 3))
    assert short.status == 409 and (await short.json())["skus"] == ["BK-0001", "OD-0002"]
    assert (await api.stock("BK-0001"))["reserved"] == 2
    assert (await api.client.get("/health/ready")).status == 200
