"""Payments test fixtures: the app on a throwaway SQLite file, no relay, a trusted issuer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import Engine, select

from chassis import sqlite_url
from services.payments.adapters.orm import outbox
from services.payments.app import create_app
from services.payments.entrypoints import deps
from services.payments.settings import PaymentsSettings
from tests.support.migrations import migrated
from tests.support.tokens import TestIssuer

READ = ["payments:read"]
WRITE = ["payments:write"]


@pytest.fixture(scope="session")
def issuer() -> TestIssuer:
    return TestIssuer()


@pytest.fixture
def settings(tmp_path: Path) -> PaymentsSettings:
    return PaymentsSettings(
        database_url=sqlite_url(tmp_path / "payments.db"),
        slow_delay=0.3,
        pending_lease=5.0,
        relay=False,
        purge_interval=0,
    )


@pytest.fixture
def app(settings: PaymentsSettings, issuer: TestIssuer) -> Iterator[Flask]:
    migrated("payments", settings.database_url)  # what `init` does, from a template
    app = create_app(settings, verifier=issuer.verifier())
    yield app
    deps(app).engine.dispose()


@pytest.fixture
def engine(app: Flask) -> Engine:
    return deps(app).engine


class Api:
    def __init__(self, client: FlaskClient, issuer: TestIssuer) -> None:
        self.client = client
        self.read = issuer.auth(READ)
        self.write = issuer.auth(WRITE)

    def charge(
        self, key: str | None, method: str = "pm_card_ok", amount: Any = "79.80", **extra: Any
    ) -> Any:
        body = {"order_id": "o1", "amount": amount, "currency": "EUR", "payment_method": method}
        body.update(extra)
        headers = dict(self.write)
        if key is not None:
            headers["Idempotency-Key"] = key
        return self.client.post("/api/v1/payments", json=body, headers=headers)

    def refund(self, payment_id: str, key: str = "refund-1") -> Any:
        return self.client.post(
            f"/api/v1/payments/{payment_id}/refund",
            headers={**self.write, "Idempotency-Key": key},
        )


@pytest.fixture
def api(app: Flask, issuer: TestIssuer) -> Api:
    return Api(app.test_client(), issuer)


def outbox_events(engine: Engine) -> list[tuple[str, dict[str, Any]]]:
    with engine.connect() as conn:
        rows = conn.execute(select(outbox.c.type, outbox.c.data).order_by(outbox.c.seq))
        return [(t, d) for t, d in rows]
