"""Must 6 with the fakes (in-memory unit of work): no saga waits forever. A forward step that
keeps failing past ORDERS_SAGA_STEP_TIMEOUT ends REJECTED with the reason, compensated, as
events; compensations and COMMIT keep being retried; pending sagas are counted by step/age."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client import CollectorRegistry

from chassis import ConfigError
from services.orders.adapters.memory import MemoryStore
from services.orders.domain import Order, Status, Step
from services.orders.service_layer import orders as use_cases
from services.orders.service_layer.saga import SagaRunner
from services.orders.service_layer.unit_of_work import InMemoryUnitOfWork, UnitOfWorkFactory
from services.orders.settings import OrdersSettings

from .fakes import FakeUpstreams


class Wall:
    def __init__(self) -> None:
        self.ahead = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.ahead


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def uow(store: MemoryStore) -> UnitOfWorkFactory:
    return lambda: InMemoryUnitOfWork(store)


def runner(
    uow: UnitOfWorkFactory, up: FakeUpstreams, wall: Wall
) -> tuple[SagaRunner, CollectorRegistry]:
    registry = CollectorRegistry()
    return SagaRunner(uow, up, step_timeout=30.0, wall=wall, registry=registry), registry


async def place(uow: UnitOfWorkFactory, up: FakeUpstreams, key: str) -> Order:
    cmd = use_cases.PlaceOrder("alice", key, (("BK-0001", 1),), "pm_card_ok")
    return (await use_cases.place_order(uow, up, cmd)).order


def kinds(store: MemoryStore, order_id: str) -> list[str]:
    return [e.type for e in store.events if e.stream == order_id]


async def test_before_the_timeout_the_step_is_retried(
    uow: UnitOfWorkFactory, store: MemoryStore
) -> None:
    up, wall = FakeUpstreams(down={"payments"}), Wall()
    saga, _ = runner(uow, up, wall)
    order = await place(uow, up, "k1")
    wall.ahead = timedelta(seconds=29)
    for _ in range(3):
        waiting = await saga.run(order.id)
        assert waiting is not None and waiting.status is Status.PENDING
    assert waiting.step is Step.CHARGE and waiting.attempts == 3
    assert kinds(store, order.id) == ["order.created", "order.stock_reserved"]


async def test_a_charge_step_past_the_timeout_releases_and_rejects(
    uow: UnitOfWorkFactory, store: MemoryStore
) -> None:
    up, wall = FakeUpstreams(down={"payments"}), Wall()
    saga, registry = runner(uow, up, wall)
    order = await place(uow, up, "k1")
    await saga.run(order.id)
    wall.ahead = timedelta(seconds=31)
    done = await saga.run(order.id)
    assert done is not None and done.status is Status.REJECTED and done.finished
    assert done.reason == "charge step timed out (last error: payments: down)"
    assert kinds(store, order.id) == [
        "order.created",
        "order.stock_reserved",
        "order.payment_declined",
        "order.stock_released",
        "order.rejected",
    ]
    assert up.reservations[order.id][0] == "RELEASED" and up.charges == {}
    timed_out = registry.get_sample_value(
        "orders_saga_steps_total", {"step": "CHARGE", "outcome": "TimedOut"}
    )
    assert timed_out == 1.0
    folded = Order.from_events([e for e in store.events if e.stream == order.id])
    assert folded.snapshot() == store.rows[order.id].order.snapshot()


async def test_a_compensation_never_times_out_and_pending_sagas_are_gauged(
    uow: UnitOfWorkFactory, store: MemoryStore
) -> None:
    up, wall = FakeUpstreams(down={"payments"}), Wall()
    saga, registry = runner(uow, up, wall)
    order = await place(uow, up, "k1")
    await saga.run(order.id)
    wall.ahead = timedelta(seconds=31)
    up.down = {"payments", "inventory"}  # the release cannot happen either
    waiting = await saga.run(order.id)
    assert waiting is not None and waiting.step is Step.RELEASE
    wall.ahead = timedelta(hours=2)
    for _ in range(2):
        waiting = await saga.run(order.id)
        assert waiting is not None and waiting.step is Step.RELEASE  # retried, not given up
    await saga.refresh_pending()
    assert (
        registry.get_sample_value("orders_saga_pending", {"step": "RELEASE", "age": "ge_1h"}) == 1
    )
    assert registry.get_sample_value("orders_saga_pending", {"step": "CHARGE", "age": "lt_1m"}) == 0
    up.down = set()
    done = await saga.run(order.id)
    assert done is not None and done.status is Status.REJECTED
    await saga.refresh_pending()
    assert (
        registry.get_sample_value("orders_saga_pending", {"step": "RELEASE", "age": "ge_1h"}) == 0
    )


def test_the_timeout_setting_is_validated() -> None:
    assert OrdersSettings().saga_step_timeout == 300.0
    assert OrdersSettings.from_env({"ORDERS_SAGA_STEP_TIMEOUT": "120"}).saga_step_timeout == 120
    for bad in ("0", "-5", "10"):  # 10 s: shorter than one step's worst call (3 x 5 s)
        with pytest.raises(ConfigError, match="ORDERS_SAGA_STEP_TIMEOUT"):
            OrdersSettings.from_env({"ORDERS_SAGA_STEP_TIMEOUT": bad})
