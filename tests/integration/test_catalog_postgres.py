"""The catalog's SQL adapters and HTTP API against a real PostgreSQL database."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from flask.testing import FlaskClient

from chassis import create_db_engine
from chassis.migrations import upgrade
from services.catalog.__main__ import init
from services.catalog.adapters.orm import metadata
from services.catalog.adapters.repository import DuplicateKey, ProductFilter
from services.catalog.app import create_app
from services.catalog.domain import Product
from services.catalog.entrypoints import deps
from services.catalog.migrations import MIGRATIONS_DIR
from services.catalog.service_layer import services
from services.catalog.service_layer.unit_of_work import SqlAlchemyUnitOfWork
from services.catalog.settings import CatalogSettings
from tests.support.tokens import TestIssuer

pytestmark = pytest.mark.postgres

BASE = "/api/v1/products"
T0 = datetime(2025, 3, 1, 12, 0, 0, 654321, tzinfo=UTC)


@pytest.fixture
def uow(postgres_url: str) -> Iterator[SqlAlchemyUnitOfWork]:
    upgrade(metadata, MIGRATIONS_DIR, postgres_url)  # the schema as deployed (ADR 0019)
    engine = create_db_engine(postgres_url)
    yield SqlAlchemyUnitOfWork(engine)
    engine.dispose()


@pytest.fixture
def issuer() -> TestIssuer:
    return TestIssuer()


@pytest.fixture
def client(postgres_url: str, issuer: TestIssuer) -> Iterator[FlaskClient]:
    settings = CatalogSettings(database_url=postgres_url, relay=False)
    init(settings)
    init(settings)  # idempotent
    app = create_app(settings, verifier=issuer.verifier())
    yield app.test_client()
    deps(app).engine.dispose()


def test_repository_round_trip_filters_and_keyset(uow: SqlAlchemyUnitOfWork) -> None:
    made = [
        Product.create(
            sku=f"PG-{i}",
            name=f"{'Kettle' if i % 2 else 'Mug'} {i}",
            category="kitchen" if i < 4 else "misc",
            price=Decimal(f"{i}.25"),
            now=T0 + timedelta(seconds=i // 2),  # pairs share a timestamp: ids break ties
        )
        for i in range(6)
    ]
    with uow:
        for p in reversed(made):
            uow.products.add(p)
        uow.commit()
    ordered = sorted(made, key=lambda p: p.sort_key)
    with uow:
        assert uow.products.get(made[0].id) == made[0]
        first = uow.products.list(ProductFilter(), None, 4)
        assert first == ordered[:4]
        assert uow.products.list(ProductFilter(), first[-1].sort_key, 4) == ordered[4:]
        kettles = ProductFilter(q="KETTLE", category="kitchen", min_price=Decimal("2"))
        assert [p.sku for p in uow.products.list(kettles, None, 10)] == ["PG-3"]
    with pytest.raises(DuplicateKey), uow:
        uow.products.add(Product.create(sku="PG-0", name="x", category="c", price=Decimal(1)))


def test_idempotent_create_on_postgres(uow: SqlAlchemyUnitOfWork) -> None:
    cmd = services.NewProduct(sku="PG-1", name="Once", category="c", price=Decimal("2.50"))
    first = services.create_product(uow, cmd, idempotency=("client", "key"))
    again = services.create_product(uow, cmd, idempotency=("client", "key"))
    assert again.replayed and again.product == first.product


def test_http_create_list_and_paginate(client: FlaskClient, issuer: TestIssuer) -> None:
    write, read = issuer.auth(["catalog:write"]), issuer.auth(["catalog:read"])
    ids = []
    for i in range(5):
        body = {"sku": f"HTTP-{i}", "name": f"Item {i}", "category": "misc", "price": f"{i}.5"}
        resp = client.post(BASE, json=body, headers={**write, "Idempotency-Key": f"k{i}"})
        assert resp.status_code == 201, resp.get_json()
        ids.append(resp.get_json()["id"])
    replay = client.post(
        BASE,
        json={"sku": "HTTP-0", "name": "Item 0", "category": "misc", "price": "0.5"},
        headers={**write, "Idempotency-Key": "k0"},
    )
    assert replay.status_code == 201 and replay.get_json()["id"] == ids[0]
    dup = client.post(  # another key, a taken sku
        BASE,
        json={"sku": "HTTP-0", "name": "x", "category": "misc", "price": "1"},
        headers={**write, "Idempotency-Key": "k-dup"},
    )
    assert dup.status_code == 409 and dup.mimetype == "application/problem+json"

    seen: list[str] = []
    url: str | None = f"{BASE}?limit=2"
    while url:
        resp = client.get(url, headers=read)
        assert resp.status_code == 200
        seen += [p["id"] for p in resp.get_json()["items"]]
        link = resp.headers.get("Link")
        url = link[1 : link.index(">")] if link else None
    assert seen == ids

    cheap = client.get(BASE, query_string={"max_price": "1.50", "q": "ITEM"}, headers=read)
    assert [p["sku"] for p in cheap.get_json()["items"]] == ["HTTP-0", "HTTP-1"]
    assert client.get("/health/ready").status_code == 200


def test_a_read_unit_reads_in_autocommit_on_postgres(uow: SqlAlchemyUnitOfWork) -> None:
    made = Product.create(sku="PG-R", name="Read", category="c", price=Decimal("2.50"))
    with uow:
        uow.products.add(made)
        uow.commit()
    reads = SqlAlchemyUnitOfWork(uow.engine, read_through=True)
    with reads:
        assert reads.products.list(ProductFilter(sku="PG-R"), None, 5) == [made]
        assert reads._conn is not None
        assert reads._conn.connection.dbapi_connection.autocommit  # type: ignore[union-attr]
    with uow:  # the pool's connection is back in transactions for the writers
        assert uow._conn is not None
        assert not uow._conn.connection.dbapi_connection.autocommit  # type: ignore[union-attr]
