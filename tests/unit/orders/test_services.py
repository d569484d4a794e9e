"""Orders' use cases and saga against the in-memory unit of work (no database), and the fake
repository held to the SQL one's contract."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from services.orders.adapters.memory import MemoryOrderRepository, MemoryStore
from services.orders.adapters.repository import (
    AbstractOrderRepository,
    DuplicateKey,
    OrderRepository,
)
from services.orders.domain import Order, Status, Step
from services.orders.service_layer import orders as use_cases
from services.orders.service_layer.saga import SagaRunner
from services.orders.service_layer.unit_of_work import InMemoryUnitOfWork, UnitOfWorkFactory

from .fakes import FakeUpstreams


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def uow(store: MemoryStore) -> UnitOfWorkFactory:
    return lambda: InMemoryUnitOfWork(store)


def cmd(key: str = "k1", pm: str = "pm_card_ok", owner: str = "alice", **kw: Any) -> Any:
    items = kw.pop("items", (("BK-0001", 2), ("EL-0001", 1)))
    return use_cases.PlaceOrder(owner=owner, key=key, items=items, payment_method=pm)


def outbox(store: MemoryStore) -> list[str]:
    return [e.type for e in store.outbox]


async def test_placing_stores_a_priced_pending_order_once(
    uow: UnitOfWorkFactory, store: MemoryStore, upstreams: FakeUpstreams
) -> None:
    placed = await use_cases.place_order(uow, upstreams, cmd())
    assert not placed.replayed and placed.order.step is Step.RESERVE
    assert placed.order.total == Decimal("109.79")
    assert outbox(store) == ["order.created"]
    again = await use_cases.place_order(uow, upstreams, cmd())
    assert again.replayed and again.order.id == placed.order.id
    with pytest.raises(use_cases.IdempotencyKeyReused):
        await use_cases.place_order(uow, upstreams, cmd(pm="pm_card_declined"))
    other = await use_cases.place_order(uow, upstreams, cmd(owner="bob"))  # keys are per owner
    assert other.order.id != placed.order.id
    with pytest.raises(use_cases.UnknownProducts):
        await use_cases.place_order(uow, upstreams, cmd(key="k2", items=(("NO-SUCH", 1),)))
    assert len(store.rows) == 2 and outbox(store) == ["order.created", "order.created"]


async def test_the_saga_confirms_and_a_declined_card_is_compensated(
    uow: UnitOfWorkFactory, store: MemoryStore, upstreams: FakeUpstreams
) -> None:
    runner = SagaRunner(uow, upstreams)
    ok = (await use_cases.place_order(uow, upstreams, cmd())).order
    declined = (await use_cases.place_order(uow, upstreams, cmd("k2", "pm_card_declined"))).order
    done = await runner.run(ok.id)
    assert done is not None and done.status is Status.CONFIRMED
    rejected = await runner.run(declined.id)
    assert rejected is not None and rejected.status is Status.REJECTED
    assert upstreams.reservations[declined.id][0] == "RELEASED" and upstreams.charges != {}
    stored = await use_cases.get_order(uow, "alice", ok.id)
    assert stored.status is Status.CONFIRMED and stored.payment_id == "pay-1"
    assert [ln.unit_price for ln in stored.lines] == [Decimal("39.90"), Decimal("29.99")]
    assert [t for t in outbox(store) if t in ("order.confirmed", "order.rejected")] == [
        "order.confirmed",
        "order.rejected",
    ]
    assert await runner.run(ok.id) is None  # finished: nothing to claim


async def test_a_held_saga_is_not_run_by_another_runner_until_released(
    uow: UnitOfWorkFactory, upstreams: FakeUpstreams
) -> None:
    placed = (await use_cases.place_order(uow, upstreams, cmd())).order
    async with uow() as unit:
        assert await unit.orders.claim(placed.id, "other", 1.0, 2e12)
        await unit.commit()
    runner = SagaRunner(uow, upstreams)
    assert await runner.run(placed.id) is None and await runner.due(10) == []
    other = SagaRunner(uow, upstreams, instance_id="other")
    assert await other.release_leases() == 1
    assert await runner.due(10) == [placed.id]
    done = await runner.run(placed.id)
    assert done is not None and done.status is Status.CONFIRMED


async def test_reads_are_the_owners_newest_first(
    uow: UnitOfWorkFactory, upstreams: FakeUpstreams
) -> None:
    ids = [(await use_cases.place_order(uow, upstreams, cmd(f"k{i}"))).order.id for i in range(3)]
    await use_cases.place_order(uow, upstreams, cmd(owner="bob"))
    page, after = await use_cases.list_orders(uow, "alice", limit=2)
    assert [o.id for o in page] == ids[:0:-1] and after is not None
    rest, after = await use_cases.list_orders(uow, "alice", before=after, limit=2)
    assert [o.id for o in rest] == [ids[0]] and after is None
    everyone, _ = await use_cases.list_orders(uow, None)
    assert len(everyone) == 4
    with pytest.raises(use_cases.OrderNotFound):
        await use_cases.get_order(uow, "bob", ids[0])  # another's: not found, not revealed


async def test_a_unit_rolled_back_leaves_nothing(
    uow: UnitOfWorkFactory, store: MemoryStore
) -> None:
    order, events = Order.place("alice", [("BK-0001", 1)], "pm_card_ok")
    async with uow() as unit:
        await unit.orders.add(order, key="k", fingerprint="f", now=1.0)
        await unit.orders.add_events(order, events)
    assert store.rows == {} and store.outbox == [] and store.events == []


# --- the fake keeps the SQL repository's contract ------------------------------------------


T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _order(owner: str, at: datetime) -> Order:
    order, _ = Order.place(owner, [("BK-0001", 1)], "pm_card_ok")
    order.created_at = order.updated_at = at
    return order


async def _contract(repo: AbstractOrderRepository) -> None:
    a, b = _order("alice", T0), _order("alice", T0 + timedelta(seconds=1))
    await repo.add(a, key="k1", fingerprint="f1", now=10.0, traceparent="00-tp-01")
    await repo.add(b, key="k2", fingerprint="f2", now=20.0)
    with pytest.raises(DuplicateKey):
        await repo.add(_order("alice", T0), key="k1", fingerprint="f3", now=1.0)
    await repo.add(_order("bob", T0), key="k1", fingerprint="f4", now=99.0)  # another owner's
    found = await repo.get(a.id)
    assert found is not None and found.order.id == a.id and found.fingerprint == "f1"
    assert found.traceparent == "00-tp-01" and found.order.created_at == T0
    by_key = await repo.get_by_key("alice", "k2")
    assert by_key is not None and by_key.order.id == b.id
    assert await repo.get("nope") is None and await repo.get_by_key("carol", "k1") is None
    assert [o.id for o in await repo.list_for("alice", status=None, before=None, limit=9)] == [
        b.id,
        a.id,
    ]
    assert [
        o.id
        for o in await repo.list_for("alice", status=None, before=(b.created_at, b.id), limit=9)
    ] == [a.id]
    assert await repo.due(15.0, 9) == [a.id]
    assert await repo.claim(a.id, "r1", 15.0, 45.0)
    assert not await repo.claim(a.id, "r2", 16.0, 46.0)  # held by r1
    assert await repo.due(30.0, 9) == [b.id]
    a.step, a.attempts = Step.CHARGE, 1
    args: dict[str, Any] = {"lease_owner": "r1", "next_attempt_at": 50.0, "lease_until": None}
    assert not await repo.save(a, expected_version=7, **args)  # the version moved
    assert await repo.save(a, expected_version=1, **args)
    assert a.version == 2
    saved = await repo.get(a.id)
    assert saved is not None and saved.order.step is Step.CHARGE and saved.order.version == 2
    assert saved.lease_owner is None and saved.next_attempt_at == 50.0
    assert await repo.claim(b.id, "r1", 30.0, 60.0)
    assert await repo.release_leases("r1") == 1
    assert await repo.claim(b.id, "r2", 31.0, 61.0)
    assert await repo.add_events(a, []) == 0


@pytest.mark.parametrize("kind", ["memory", "sql"])
async def test_both_repositories_behave_alike(kind: str, engine: AsyncEngine) -> None:
    if kind == "memory":
        await _contract(MemoryOrderRepository(MemoryStore()))
        return
    async with engine.begin() as conn:
        await _contract(OrderRepository(conn))
