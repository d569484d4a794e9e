"""Catalog's retention wiring: a replay inside the Idempotency-Key window still returns the
first answer after a purge; expired keys and old published events go; counts on /metrics."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from chassis import ConfigError, sqlite_url
from chassis.retention import Purger
from services.catalog.__main__ import init
from services.catalog.adapters.orm import idempotency_keys, outbox
from services.catalog.app import create_app
from services.catalog.entrypoints import deps
from services.catalog.settings import CatalogSettings
from tests.support.tokens import TestIssuer
from tests.unit.catalog.conftest import Api

BODY = {"sku": "SKU-R1", "name": "Kept", "category": "tools", "price": "1.00"}


def test_replay_inside_the_window_returns_the_first_answer_after_a_purge(
    settings: CatalogSettings, issuer: TestIssuer
) -> None:
    settings = replace(settings, retention_days=1)  # the shortest retention allowed
    init(settings)
    app = create_app(settings, verifier=issuer.verifier())
    client: FlaskClient = app.test_client()
    purger: Purger = deps(app).purger
    engine = deps(app).engine
    headers = {**issuer.auth(["catalog:write"]), "Idempotency-Key": "keep-me"}
    try:
        first = client.post("/api/v1/products", json=BODY, headers=headers)
        assert first.status_code == 201

        purger.purge(datetime.now(UTC) + timedelta(hours=23))  # still inside the window
        again = client.post("/api/v1/products", json=BODY, headers=headers)
        assert again.status_code == 201
        assert again.headers["Idempotent-Replayed"] == "true"
        assert again.get_json() == first.get_json()

        # the product.created event is unpublished (no relay here): kept whatever its age
        assert purger.purge(datetime.now(UTC) + timedelta(days=2)) == {
            "outbox": 0,
            "idempotency_keys": 1,
        }
        with engine.connect() as conn:
            assert conn.execute(select(idempotency_keys)).all() == []
            assert len(conn.execute(select(outbox)).all()) == 1
    finally:
        engine.dispose()


def test_old_published_events_are_purged(client: FlaskClient, api: Api) -> None:
    app = client.application
    engine = deps(app).engine
    assert api.create().status_code == 201
    with engine.begin() as conn:
        conn.execute(outbox.update().values(published_at=datetime.now(UTC)))
    purger: Purger = deps(app).purger
    assert purger.purge(datetime.now(UTC) + timedelta(days=6))["outbox"] == 0
    assert purger.purge(datetime.now(UTC) + timedelta(days=8))["outbox"] == 1


def test_row_counts_on_metrics(client: FlaskClient, api: Api) -> None:
    assert api.create().status_code == 201
    text = client.get("/metrics").get_data(as_text=True)
    assert 'db_table_rows{service="catalog",table="products"} 1.0' in text
    assert 'db_table_rows{service="catalog",table="outbox"} 1.0' in text
    assert 'db_table_rows{service="catalog",table="idempotency_keys"} 1.0' in text  # its key
    assert 'retention_purged_rows_total{service="catalog",table="outbox"} 0.0' in text


def test_retention_below_the_window_refused_at_start_up(tmp_path: Path) -> None:
    env = {"CATALOG_DATABASE_URL": sqlite_url(tmp_path / "c.db"), "CATALOG_RETENTION_DAYS": "0.5"}
    with pytest.raises(ConfigError, match="CATALOG_RETENTION_DAYS"):
        CatalogSettings.from_env(env)
