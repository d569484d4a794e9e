"""Inventory's use cases against the in-memory unit of work (no database), and the fake
repository held to the SQL one's contract."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from chassis.db import create_async_db_engine
from services.inventory.adapters.memory import MemoryInventoryRepository, MemoryStore
from services.inventory.adapters.repository import (
    AbstractInventoryRepository,
    DuplicateReservation,
    InventoryRepository,
)
from services.inventory.domain import Line, Reservation, ReservationStatus, Shortage, StockLevel
from services.inventory.service_layer import services
from services.inventory.service_layer.unit_of_work import InMemoryUnitOfWork
from tests.support.migrations import migrated

RESERVED, COMMITTED = ReservationStatus.RESERVED, ReservationStatus.COMMITTED
RELEASED, REJECTED = ReservationStatus.RELEASED, ReservationStatus.REJECTED


@pytest.fixture
def uow() -> InMemoryUnitOfWork:
    store = MemoryStore(stock={"A": StockLevel("A", 10, 0), "B": StockLevel("B", 2, 0)})
    return InMemoryUnitOfWork(store)


@pytest.fixture
def service(uow: InMemoryUnitOfWork) -> services.InventoryService:
    return services.InventoryService(lambda: uow, low_stock_threshold=5)


async def test_a_reserve_holds_every_line_once(
    service: services.InventoryService, uow: InMemoryUnitOfWork
) -> None:
    held = await service.reserve("o1", [Line("B", 1), Line("A", 3), Line("A", 1)])
    assert held == Reservation("o1", RESERVED, (Line("A", 4), Line("B", 1)))
    assert uow.store.stock["A"] == StockLevel("A", 10, 4)
    assert await service.reserve("o1", [Line("A", 4), Line("B", 1)]) == held  # a retry
    assert uow.store.stock["A"].reserved == 4  # held once
    with pytest.raises(services.ReservationMismatch):
        await service.reserve("o1", [Line("A", 1)])


async def test_a_shortage_holds_nothing_and_is_the_answer_to_a_retry(
    service: services.InventoryService, uow: InMemoryUnitOfWork
) -> None:
    with pytest.raises(services.OutOfStock) as short:
        await service.reserve("o1", [Line("A", 1), Line("B", 3), Line("Z", 1)])
    assert short.value.reservation.shortages == (Shortage("B", 3, 2), Shortage("Z", 1, 0))
    assert uow.store.stock["A"].reserved == 0 and uow.store.stock["B"].reserved == 0
    await service.set_stock("B", 50)  # stock arrives; the order was still refused
    with pytest.raises(services.OutOfStock):
        await service.reserve("o1", [Line("A", 1), Line("B", 3), Line("Z", 1)])


async def test_commit_ships_and_release_after_it_is_refused(
    service: services.InventoryService, uow: InMemoryUnitOfWork
) -> None:
    await service.reserve("o1", [Line("A", 3)])
    assert (await service.commit("o1")).status is COMMITTED
    assert uow.store.stock["A"] == StockLevel("A", 7, 0)
    assert (await service.commit("o1")).status is COMMITTED  # again: a no-op
    assert uow.store.stock["A"] == StockLevel("A", 7, 0)
    with pytest.raises(services.ReservationConflict):
        await service.release("o1")


async def test_release_frees_the_units_and_an_unknown_order_leaves_a_tombstone(
    service: services.InventoryService, uow: InMemoryUnitOfWork
) -> None:
    await service.reserve("o1", [Line("A", 3)])
    assert (await service.release("o1")).status is RELEASED
    assert uow.store.stock["A"].reserved == 0
    assert (await service.release("o1")).status is RELEASED  # idempotent
    assert (await service.release("late")) == Reservation("late", RELEASED, ())
    with pytest.raises(services.ReservationConflict):  # its reserve arrives after the release
        await service.reserve("late", [Line("A", 1)])
    with pytest.raises(services.ReservationNotFound):
        await service.commit("nope")


async def test_stock_low_is_recorded_once_when_available_crosses_the_threshold(
    service: services.InventoryService, uow: InMemoryUnitOfWork
) -> None:
    await service.reserve("o1", [Line("A", 4)])  # 10 -> 6 available: above 5
    assert uow.published == []
    await service.reserve("o2", [Line("A", 2)])  # 6 -> 4: crossed
    await service.reserve("o3", [Line("A", 1)])  # 4 -> 3: already below, no flood
    assert [(e.type, e.data) for e in uow.published] == [
        ("stock.low", {"sku": "A", "available": 4})
    ]
    with pytest.raises(services.BelowReserved):
        await service.set_stock("A", 6)  # 7 units are reserved
    assert (await service.set_stock("NEW", 3)) == StockLevel("NEW", 3, 0)
    assert (await service.get_stock("NEW")).available == 3
    with pytest.raises(services.StockNotFound):
        await service.get_stock("nope")


async def test_a_unit_rolled_back_leaves_nothing(uow: InMemoryUnitOfWork) -> None:
    async with uow:
        assert await uow.inventory.try_reserve("A", 5) == 5
        await uow.inventory.add_reservation(Reservation("o1", RESERVED, (Line("A", 5),)))
    assert uow.store.stock["A"].reserved == 0 and uow.store.reservations == {}


# --- the fake keeps the SQL repository's contract ------------------------------------------


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'inventory.db'}"
    migrated("inventory", url)
    engine = create_async_db_engine(url)
    yield engine
    await engine.dispose()


async def _contract(repo: AbstractInventoryRepository) -> None:
    assert await repo.set_on_hand("A", 5) == (StockLevel("A", 5, 0), 0)
    assert await repo.set_on_hand("B", 1) == (StockLevel("B", 1, 0), 0)
    assert await repo.try_reserve("A", 4) == 1
    assert await repo.try_reserve("A", 2) is None  # never more than available
    assert await repo.try_reserve("Z", 1) is None
    assert await repo.set_on_hand("A", 3) is None  # below the 4 reserved
    assert await repo.set_on_hand("A", 6) == (StockLevel("A", 6, 4), 1)
    await repo.ship("A", 2)
    await repo.unreserve("A", 1)
    assert await repo.get_stock("A") == StockLevel("A", 4, 1)
    assert await repo.get_stocks(["A", "Z"]) == {"A": StockLevel("A", 4, 1)}
    await repo.add_reservation(Reservation("o1", RESERVED, (Line("B", 1), Line("A", 1))))
    with pytest.raises(DuplicateReservation):
        await repo.add_reservation(Reservation("o1", RESERVED, ()))
    found = await repo.get_reservation("o1")
    assert found == Reservation("o1", RESERVED, (Line("A", 1), Line("B", 1)))  # by sku
    assert not await repo.transition("o1", COMMITTED, RELEASED)
    assert await repo.transition("o1", RESERVED, COMMITTED)
    await repo.add_reservation(Reservation("o2", RESERVED, (Line("A", 9),)))
    await repo.reject("o2", (Shortage("A", 9, 3),))
    assert await repo.get_reservation("o2") == Reservation(
        "o2", REJECTED, (Line("A", 9),), (Shortage("A", 9, 3),)
    )
    assert await repo.get_reservation("nope") is None


@pytest.mark.parametrize("kind", ["memory", "sql"])
async def test_both_repositories_behave_alike(kind: str, engine: AsyncEngine) -> None:
    if kind == "memory":
        await _contract(MemoryInventoryRepository(MemoryStore()))
        return
    async with engine.begin() as conn:
        await _contract(InventoryRepository(conn))
