"""Payments' use cases against the in-memory unit of work (no database), and the fake
repository held to the SQL one's contract."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from chassis import create_db_engine, sqlite_url
from services.payments.adapters.memory import MemoryPaymentRepository
from services.payments.adapters.provider import SimulatedProvider
from services.payments.adapters.repository import (
    AbstractPaymentRepository,
    DuplicateKey,
    PaymentRepository,
)
from services.payments.domain import Payment, PaymentStatus
from services.payments.service_layer import services
from services.payments.service_layer.unit_of_work import InMemoryUnitOfWork
from tests.support.migrations import migrated


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def uow() -> InMemoryUnitOfWork:
    return InMemoryUnitOfWork()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(uow: InMemoryUnitOfWork, clock: Clock) -> services.PaymentService:
    return services.PaymentService(
        lambda: uow, SimulatedProvider(0.0), pending_lease=5.0, clock=clock
    )


def request(method: str = "pm_card_ok", order: str = "o1", owner: str = "u1") -> Any:
    return services.ChargeRequest(
        order_id=order, amount_cents=1250, payment_method=method, owner=owner
    )


def test_a_capture_is_stored_and_its_event_committed_with_it(
    service: services.PaymentService, uow: InMemoryUnitOfWork
) -> None:
    result = service.charge("k1", request())
    assert result.payment.status is PaymentStatus.CAPTURED and not result.replayed
    assert [e.type for e in uow.published] == ["payment.captured"]
    assert uow.published[0].data == {
        "payment_id": result.payment.id,
        "order_id": "o1",
        "amount": "12.50",
        "currency": "EUR",
    }
    again = service.charge("k1", request())
    assert again.replayed and again.payment == result.payment
    assert len(uow.published) == 1  # a replay publishes nothing


def test_a_decline_is_kept_and_replayed_without_an_event(
    service: services.PaymentService, uow: InMemoryUnitOfWork
) -> None:
    with pytest.raises(services.Declined) as first:
        service.charge("k1", request("pm_card_declined"))
    assert first.value.payment.decline_code == "card_declined"
    with pytest.raises(services.Declined):
        service.charge("k1", request("pm_card_declined"))
    assert uow.published == []
    assert [p.status for p in uow.rows.values()] == [PaymentStatus.DECLINED]


def test_an_outage_frees_the_key(service: services.PaymentService, uow: InMemoryUnitOfWork) -> None:
    with pytest.raises(services.ProviderDown):
        service.charge("k1", request("pm_card_error"))
    assert uow.rows == {} and uow.published == []  # the claim was dropped: nothing charged
    retried = service.charge("k1", request())  # the key is free again
    assert retried.payment.status is PaymentStatus.CAPTURED and not retried.replayed


def test_a_key_reused_with_another_request_is_refused(service: services.PaymentService) -> None:
    service.charge("k1", request())
    with pytest.raises(services.KeyReused):
        service.charge("k1", request(order="o2"))


def test_a_fresh_pending_claim_is_in_progress_and_a_stale_one_is_taken_over(
    service: services.PaymentService, uow: InMemoryUnitOfWork, clock: Clock
) -> None:
    req = request()
    orphan = Payment(
        id="p-orphan",
        order_id=req.order_id,
        amount_cents=req.amount_cents,
        currency=req.currency,
        payment_method=req.payment_method,
        status=PaymentStatus.PENDING,
        idempotency_key="k1",
        fingerprint=req.fingerprint(),
        created_at="2026-01-01T00:00:00.000000+00:00",
        updated_at="2026-01-01T00:00:00.000000+00:00",
        attempt_at=clock.now,
        owner="u1",
    )
    uow.rows[orphan.id] = orphan
    with pytest.raises(services.ChargeInProgress):
        service.charge("k1", req)
    clock.now += 6  # past the 5 s lease: the claim's process is taken for dead
    result = service.charge("k1", req)
    assert result.payment.id == "p-orphan" and result.payment.status is PaymentStatus.CAPTURED
    assert [e.type for e in uow.published] == ["payment.captured"]


def test_a_refund_once_then_its_replay(
    service: services.PaymentService, uow: InMemoryUnitOfWork
) -> None:
    paid = service.charge("k1", request()).payment
    refund = service.refund(paid.id, "r1")
    assert refund.payment.status is PaymentStatus.REFUNDED and not refund.replayed
    assert service.refund(paid.id, "r2").replayed
    assert [e.type for e in uow.published] == ["payment.captured", "payment.refunded"]
    with pytest.raises(services.PaymentNotFound):
        service.refund("nope", "r3")


def test_a_declined_payment_is_not_refundable(service: services.PaymentService) -> None:
    with pytest.raises(services.Declined) as declined:
        service.charge("k1", request("pm_card_declined"))
    with pytest.raises(services.NotRefundable):
        service.refund(declined.value.payment.id, "r1")


def test_reads_answer_only_the_owner_unless_asked_for_everyone(
    service: services.PaymentService,
) -> None:
    mine = service.charge("k1", request(owner="u1")).payment
    service.charge("k2", request(order="o2", owner="u2"))
    assert service.get(mine.id, owner="u1") == mine
    with pytest.raises(services.PaymentNotFound):
        service.get(mine.id, owner="u2")  # another's payment: not found, not revealed
    assert [p.owner for p in service.list(None, owner="u2")] == ["u2"]
    assert len(service.list(None)) == 2
    assert [p.order_id for p in service.list("o1")] == ["o1"]


def test_a_unit_rolled_back_leaves_nothing(uow: InMemoryUnitOfWork) -> None:
    with uow:
        uow.payments.add(_payment("p1", "k1"))
        uow.record(services.outgoing.captured(_payment("p1", "k1")))
    assert uow.rows == {} and uow.published == []


# --- the fake keeps the SQL repository's contract ------------------------------------------


def _payment(pid: str, key: str, created: str = "2026-01-01T00:00:00+00:00") -> Payment:
    return Payment(
        id=pid,
        order_id="o1",
        amount_cents=100,
        currency="EUR",
        payment_method="pm_card_ok",
        status=PaymentStatus.PENDING,
        idempotency_key=key,
        fingerprint="f",
        created_at=created,
        updated_at=created,
        attempt_at=1.0,
        owner="u1",
    )


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    url = sqlite_url(tmp_path / "payments.db")
    migrated("payments", url)
    engine = create_db_engine(url)
    yield engine
    engine.dispose()


@pytest.mark.parametrize("kind", ["memory", "sql"])
def test_both_repositories_behave_alike(kind: str, engine: Engine) -> None:
    def check(repo: AbstractPaymentRepository) -> None:
        repo.add(_payment("p1", "k1", "2026-01-01T00:00:01+00:00"))
        repo.add(_payment("p2", "k2", "2026-01-01T00:00:02+00:00"))
        with pytest.raises(DuplicateKey):
            repo.add(_payment("p3", "k1"))
        assert repo.by_key("k2") == repo.get("p2") and repo.get("zz") is None
        assert [p.id for p in repo.by_order("o1", 10)] == ["p2", "p1"]  # newest first
        assert [p.id for p in repo.by_order("o1", 1)] == ["p2"]
        assert repo.by_order(None, 10, owner="u9") == []
        assert not repo.take_over("p1", 9.0, 2.0)  # not the attempt it saw
        assert repo.take_over("p1", 1.0, 2.0)
        assert not repo.finish("p1", 1.0, PaymentStatus.CAPTURED, "t")  # lost its attempt
        assert repo.finish("p1", 2.0, PaymentStatus.CAPTURED, "t")
        assert not repo.refund("p2", "r", "t")  # pending: not refundable
        assert repo.refund("p1", "r", "t2")
        refunded = repo.get("p1")
        assert refunded is not None and refunded.status is PaymentStatus.REFUNDED
        assert refunded.refunded_at == "t2"
        repo.abandon("p2", 1.0)
        assert repo.get("p2") is None

    if kind == "memory":
        check(MemoryPaymentRepository({}))
    else:
        with engine.begin() as conn:
            check(PaymentRepository(conn))
