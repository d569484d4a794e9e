"""Payments on real PostgreSQL: one capture per Idempotency-Key under concurrent retries."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Engine, text

from services.payments.__main__ import init
from services.payments.app import create_app
from services.payments.entrypoints import deps
from services.payments.settings import PaymentsSettings
from tests.support.tokens import TestIssuer
from tests.unit.payments.conftest import Api, outbox_events
from tests.unit.payments.test_owners import check_refuses_a_database_from_before_owners

pytestmark = pytest.mark.postgres


@pytest.fixture
def issuer() -> TestIssuer:
    return TestIssuer()


@pytest.fixture
def app(postgres_url: str, issuer: TestIssuer) -> Iterator[Flask]:
    settings = PaymentsSettings(
        database_url=postgres_url, slow_delay=0.3, pending_lease=5.0, relay=False
    )
    init(settings)
    init(settings)  # idempotent
    app = create_app(settings, verifier=issuer.verifier())
    yield app
    deps(app).engine.dispose()


def test_concurrent_charges_and_refunds_on_postgres(app: Flask, issuer: TestIssuer) -> None:
    engine: Engine = deps(app).engine

    def charge(i: int) -> Any:
        api = Api(app.test_client(), issuer)
        key = f"charge-o{i % 3}"  # three orders, four concurrent attempts each
        method = "pm_card_slow" if i % 3 == 0 else "pm_card_ok"
        resp = api.charge(key, method, order_id=f"o{i % 3}")
        return key, resp.status_code, (resp.get_json() or {}).get("id")

    with ThreadPoolExecutor(max_workers=12) as pool:
        results = list(pool.map(charge, range(12)))
    assert {s for _, s, _ in results} <= {201, 409}
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT idempotency_key, status, amount_cents FROM payments ORDER BY 1")
        ).all()
    assert [(k, s) for k, s, _ in rows] == [(f"charge-o{i}", "CAPTURED") for i in range(3)]
    assert sum(c for _, _, c in rows) == 3 * 7980
    assert [t for t, _ in outbox_events(engine)] == ["payment.captured"] * 3

    api = Api(app.test_client(), issuer)
    payment_id = next(pid for k, s, pid in results if s == 201 and k == "charge-o1")
    with ThreadPoolExecutor(max_workers=6) as pool:
        codes = list(
            pool.map(
                lambda i: Api(app.test_client(), issuer).refund(payment_id, f"r{i}").status_code,
                range(6),
            )
        )
    assert set(codes) == {200}
    assert [t for t, _ in outbox_events(engine)].count("payment.refunded") == 1
    assert api.charge("d", "pm_card_declined").status_code == 402
    assert api.charge("e", "pm_card_error").status_code == 503
    assert app.test_client().get("/health/ready").status_code == 200


def test_migrate_refuses_a_database_from_before_owners_on_postgres(postgres_url: str) -> None:
    check_refuses_a_database_from_before_owners(postgres_url)
