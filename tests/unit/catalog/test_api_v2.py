"""`/api/v2/products` beside v1: price as {amount, currency}, behind `catalog.v2_products`."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from chassis.flags import FlagStore
from services.catalog.app import create_app
from services.catalog.entrypoints import deps
from services.catalog.settings import CatalogSettings
from tests.support.migrations import migrated
from tests.support.tokens import TestIssuer

from .conftest import READ, WRITE

V2 = "/api/v2/products"


def flag_store(tmp_path: Path, rule: str) -> FlagStore:
    path = tmp_path / "flags.yaml"
    path.write_text(f"flags:\n  catalog.v2_products: {rule}\n", encoding="utf-8")
    store = FlagStore(path)
    assert store.reload() == []
    return store


def make_app(settings: CatalogSettings, issuer: TestIssuer, flags: FlagStore) -> Flask:
    migrated("catalog", settings.database_url)
    return create_app(settings, verifier=issuer.verifier(), flags=flags)


@pytest.fixture
def v2_app(settings: CatalogSettings, issuer: TestIssuer, tmp_path: Path) -> Iterator[Flask]:
    app = make_app(
        settings,
        issuer,
        flag_store(tmp_path, "{enabled: true, percent: 0, allow: {clients: [early]}}"),
    )
    yield app
    deps(app).engine.dispose()


def create(client: FlaskClient, issuer: TestIssuer, sku: str, price: str) -> dict[str, Any]:
    body = {"sku": sku, "name": "Widget", "category": "tools", "price": price}
    headers = {**issuer.auth(WRITE), "Idempotency-Key": uuid.uuid4().hex}
    resp = client.post("/api/v1/products", json=body, headers=headers)
    assert resp.status_code == 201, resp.get_data(as_text=True)
    doc: dict[str, Any] = resp.get_json()
    return doc


def test_v2_price_is_an_object_and_v1_is_unchanged(v2_app: Flask, issuer: TestIssuer) -> None:
    client = v2_app.test_client()
    made = create(client, issuer, "BK-0001", "9.9")
    early = issuer.auth(READ, sub="early")

    one = client.get(f"{V2}/{made['id']}", headers=early)
    assert one.status_code == 200
    doc = one.get_json()
    assert doc["price"] == {"amount": "9.90", "currency": "EUR"}
    assert "currency" not in doc
    assert {k: v for k, v in doc.items() if k != "price"} == {
        k: v for k, v in made.items() if k not in ("price", "currency")
    }
    assert one.headers["ETag"] == '"v1"'
    assert one.headers["Cache-Control"].startswith("private")  # depends on who asks

    page = client.get(V2, headers=early).get_json()
    assert page["items"][0]["price"] == {"amount": "9.90", "currency": "EUR"}
    assert page["next_cursor"] is None

    v1 = client.get(f"/api/v1/products/{made['id']}", headers=early).get_json()
    assert v1["price"] == "9.90" and v1["currency"] == "EUR"


def test_v2_is_404_problem_for_whom_the_flag_is_off(v2_app: Flask, issuer: TestIssuer) -> None:
    client = v2_app.test_client()
    made = create(client, issuer, "BK-0002", "1.00")
    for path in (V2, f"{V2}/{made['id']}"):
        resp = client.get(path, headers=issuer.auth(READ, sub="late"))
        assert resp.status_code == 404
        assert resp.mimetype == "application/problem+json"
        assert "v2" in resp.get_json()["detail"]
    # v1 still answers that client
    assert client.get("/api/v1/products", headers=issuer.auth(READ, sub="late")).status_code == 200


def test_v2_checks_the_token_before_the_flag(v2_app: Flask, issuer: TestIssuer) -> None:
    client = v2_app.test_client()
    assert client.get(V2).status_code == 401
    assert client.get(V2, headers=issuer.auth(WRITE, sub="early")).status_code == 403


def test_v2_unknown_product_is_404(v2_app: Flask, issuer: TestIssuer) -> None:
    resp = v2_app.test_client().get(f"{V2}/{uuid.uuid4()}", headers=issuer.auth(READ, sub="early"))
    assert resp.status_code == 404
    assert "no product" in resp.get_json()["detail"]


def test_no_flags_file_means_v2_is_off(
    settings: CatalogSettings, issuer: TestIssuer, tmp_path: Path
) -> None:
    app = make_app(settings, issuer, FlagStore(None))
    try:
        resp = app.test_client().get(V2, headers=issuer.auth(READ, sub="early"))
        assert resp.status_code == 404
    finally:
        deps(app).engine.dispose()


def test_openapi_lists_both_versions(v2_app: Flask) -> None:
    doc = v2_app.test_client().get("/openapi.json").get_json()
    assert {"/api/v1/products", "/api/v2/products", "/api/v2/products/{product_id}"} <= set(
        doc["paths"]
    )
    schema = doc["components"]["schemas"]["ProductV2"]
    assert "currency" not in schema["properties"]
    assert schema["properties"]["price"]["$ref"].endswith("/Price")
