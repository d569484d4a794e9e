"""Concurrent and crashed charges with one Idempotency-Key: exactly one capture, ever."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Engine, text

from chassis.messaging import OutboxWriter
from services.payments.adapters.orm import outbox
from services.payments.adapters.provider import (
    ProviderResult,
    ProviderUnavailable,
    SimulatedProvider,
)
from services.payments.adapters.repository import PaymentRepository
from services.payments.domain import Payment, PaymentStatus
from services.payments.service_layer import services
from services.payments.service_layer.unit_of_work import SqlAlchemyUnitOfWork
from tests.support.tokens import TestIssuer

from .conftest import Api, outbox_events


def _captured(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT count(*) FROM payments WHERE status = 'CAPTURED'")
            ).scalar_one()
        )


@pytest.mark.parametrize("method", ["pm_card_slow", "pm_card_ok"])
def test_concurrent_same_key_charges_capture_once(
    app: Flask, issuer: TestIssuer, engine: Engine, method: str
) -> None:
    def one(_: int) -> Any:
        resp = Api(app.test_client(), issuer).charge("charge-o1", method)
        return resp.status_code, (resp.get_json() or {}).get("id")

    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(one, range(12)))
    statuses = [s for s, _ in results]
    assert set(statuses) <= {201, 409}, statuses
    assert 201 in statuses
    assert len({pid for s, pid in results if s == 201}) == 1  # every 201 names one payment
    assert _captured(engine) == 1
    assert [t for t, _ in outbox_events(engine)] == ["payment.captured"]


def test_concurrent_refunds_refund_once(app: Flask, issuer: TestIssuer, engine: Engine) -> None:
    payment_id = Api(app.test_client(), issuer).charge("c").get_json()["id"]
    with ThreadPoolExecutor(max_workers=8) as pool:
        codes = list(
            pool.map(
                lambda i: Api(app.test_client(), issuer).refund(payment_id, f"r{i}").status_code,
                range(8),
            )
        )
    assert set(codes) == {200}
    assert [t for t, _ in outbox_events(engine)] == ["payment.captured", "payment.refunded"]


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


class FlakyProvider(SimulatedProvider):
    """Down for the first `outages` calls, then approves."""

    def __init__(self, outages: int) -> None:
        super().__init__(0)
        self.outages = outages
        self.calls = 0

    def charge(self, key: str, payment_method: str, amount_cents: int, currency: str) -> Any:
        self.calls += 1
        if self.calls <= self.outages:
            raise ProviderUnavailable("down")
        return ProviderResult(True, "ref")


def _service(engine: Engine, provider: SimulatedProvider, clock: Clock) -> Any:
    return services.PaymentService(
        lambda: SqlAlchemyUnitOfWork(engine, OutboxWriter(outbox)),
        provider,
        pending_lease=5.0,
        clock=clock,
    )


REQ = services.ChargeRequest(order_id="o9", amount_cents=500, payment_method="pm_card_ok")


def test_retry_after_an_outage_charges(engine: Engine) -> None:
    provider, clock = FlakyProvider(outages=2), Clock()
    svc = _service(engine, provider, clock)
    for _ in range(2):
        with pytest.raises(services.ProviderDown):
            svc.charge("k", REQ)
    assert svc.charge("k", REQ).payment.status is PaymentStatus.CAPTURED
    assert svc.charge("k", REQ).replayed
    assert _captured(engine) == 1 and provider.calls == 3


def test_abandoned_pending_charge_is_taken_over_after_the_lease(engine: Engine) -> None:
    """A worker killed between claim and capture leaves PENDING; a retry finishes it once."""
    clock = Clock()
    svc = _service(engine, FlakyProvider(outages=0), clock)
    orphan = Payment(
        id="p-orphan",
        order_id=REQ.order_id,
        amount_cents=REQ.amount_cents,
        currency="EUR",
        payment_method=REQ.payment_method,
        status=PaymentStatus.PENDING,
        idempotency_key="k",
        fingerprint=REQ.fingerprint(),
        created_at="2025-01-01T00:00:00+00:00",
        updated_at="2025-01-01T00:00:00+00:00",
        attempt_at=clock.now,
    )
    with engine.begin() as conn:
        PaymentRepository(conn).add(orphan)
    clock.now += 1
    with pytest.raises(services.ChargeInProgress):  # maybe still running: wait
        svc.charge("k", REQ)
    clock.now += 5
    result = svc.charge("k", REQ)
    assert result.payment.id == "p-orphan" and result.payment.status is PaymentStatus.CAPTURED
    assert svc.charge("k", REQ).replayed
    assert _captured(engine) == 1
    assert [t for t, _ in outbox_events(engine)] == ["payment.captured"]
