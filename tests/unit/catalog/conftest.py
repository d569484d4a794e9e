"""Catalog test fixtures: an app on a throwaway SQLite file, and a token issuer it trusts."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from chassis import sqlite_url
from services.catalog.app import create_app
from services.catalog.entrypoints import deps
from services.catalog.settings import CatalogSettings
from tests.support.migrations import migrated
from tests.support.tokens import TestIssuer

READ = ["catalog:read"]
WRITE = ["catalog:write"]


@pytest.fixture(scope="session")
def issuer() -> TestIssuer:
    return TestIssuer()


@pytest.fixture
def settings(tmp_path: Path) -> CatalogSettings:
    return CatalogSettings(
        database_url=sqlite_url(tmp_path / "catalog.db"), relay=False, purge_interval=0
    )


@pytest.fixture
def app(settings: CatalogSettings, issuer: TestIssuer) -> Iterator[Flask]:
    migrated("catalog", settings.database_url)  # what `init` does, from a template
    app = create_app(settings, verifier=issuer.verifier())
    yield app
    deps(app).engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


class Api:
    """Small helper for authenticated calls, in the spirit of flaskr's AuthActions."""

    def __init__(self, client: FlaskClient, issuer: TestIssuer) -> None:
        self.client = client
        self.issuer = issuer
        self.read = issuer.auth(READ)
        self.write = issuer.auth(WRITE)

    def create(self, *, key: str | None = None, **fields: Any) -> Any:
        """POST a product; a fresh Idempotency-Key unless `key` is given."""
        body = {"sku": "SKU-001", "name": "Widget", "category": "tools", "price": "9.99"}
        body.update(fields)
        headers = {**self.write, "Idempotency-Key": key or uuid.uuid4().hex}
        return self.client.post("/api/v1/products", json=body, headers=headers)

    def list(self, **params: Any) -> Any:
        return self.client.get("/api/v1/products", query_string=params, headers=self.read)


@pytest.fixture
def api(client: FlaskClient, issuer: TestIssuer) -> Api:
    return Api(client, issuer)
