"""One contract, two adapters: the in-memory fake must behave like the SQL repository."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from chassis import create_db_engine, sqlite_url
from chassis.migrations import upgrade
from services.catalog.adapters.orm import metadata
from services.catalog.adapters.repository import (
    DuplicateKey,
    IdempotencyRecord,
    ProductFilter,
    StaleVersion,
)
from services.catalog.domain import Product
from services.catalog.migrations import MIGRATIONS_DIR
from services.catalog.service_layer.unit_of_work import (
    AbstractUnitOfWork,
    InMemoryUnitOfWork,
    SqlAlchemyUnitOfWork,
)

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture(params=["memory", "sqlite"])
def uow(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[AbstractUnitOfWork]:
    if request.param == "memory":
        yield InMemoryUnitOfWork()
        return
    url = sqlite_url(tmp_path / "repo.db")
    upgrade(metadata, MIGRATIONS_DIR, url)  # the schema as deployed (ADR 0019)
    engine = create_db_engine(url)
    yield SqlAlchemyUnitOfWork(engine)
    engine.dispose()


def product(sku: str, name: str = "Thing", price: str = "1.00", at: int = 0) -> Product:
    return Product.create(
        sku=sku,
        name=name,
        category="misc",
        price=Decimal(price),
        now=T0 + timedelta(seconds=at),
    )


def add(uow: AbstractUnitOfWork, *products: Product) -> None:
    with uow:
        for p in products:
            uow.products.add(p)
        uow.commit()


def test_round_trip_keeps_exact_values(uow: AbstractUnitOfWork) -> None:
    p = product("SKU-1", price="999999.05")
    add(uow, p)
    with uow:
        got = uow.products.get(p.id)
        assert got == p
        assert got is not None and got.created_at.tzinfo is not None
        assert uow.products.get_by_sku("SKU-1") == p
        assert uow.products.get("missing") is None


def test_duplicate_sku(uow: AbstractUnitOfWork) -> None:
    add(uow, product("SKU-1"))
    with pytest.raises(DuplicateKey) as err, uow:
        uow.products.add(product("SKU-1"))
    assert err.value.what == "sku"


def test_list_order_filters_and_keyset(uow: AbstractUnitOfWork) -> None:
    a = product("A-1", "100% Cotton Shirt", "20.00", at=0)
    b = product("A-2", "Cotton_Socks", "5.00", at=1)
    c = product("A-3", "Wool Socks", "12.50", at=1)  # same instant as b: the id breaks the tie
    d = product("A-4", "cotton towel", "8.00", at=2)
    add(uow, d, c, b, a)
    with uow:
        everything = uow.products.list(ProductFilter(), None, 10)
        assert [p.sku for p in everything] == [
            p.sku for p in sorted([a, b, c, d], key=lambda p: p.sort_key)
        ]
        rest = uow.products.list(ProductFilter(), everything[1].sort_key, 10)
        assert rest == everything[2:]
        assert [p.sku for p in uow.products.list(ProductFilter(q="COTTON"), None, 10)] == [
            "A-1",
            "A-2",
            "A-4",
        ]
        # LIKE wildcards in q are literal
        assert [p.sku for p in uow.products.list(ProductFilter(q="100%"), None, 10)] == ["A-1"]
        assert [p.sku for p in uow.products.list(ProductFilter(q="n_s"), None, 10)] == ["A-2"]
        cheap = ProductFilter(min_price=Decimal("5"), max_price=Decimal("12.49"))
        assert [p.sku for p in uow.products.list(cheap, None, 10)] == ["A-2", "A-4"]


def test_update_with_optimistic_lock(uow: AbstractUnitOfWork) -> None:
    p, other = product("SKU-1"), product("SKU-2")
    add(uow, p, other)
    with uow:
        p.update({"name": "Renamed"})
        uow.products.update(p, expected_version=1)
        uow.commit()
    with uow:
        assert uow.products.get(p.id) == p
    with pytest.raises(StaleVersion), uow:
        uow.products.update(p, expected_version=1)
    with pytest.raises(DuplicateKey), uow:
        other.update({"sku": "SKU-1"})
        uow.products.update(other, expected_version=1)


def test_delete(uow: AbstractUnitOfWork) -> None:
    p = product("SKU-1")
    add(uow, p)
    with uow:
        assert not uow.products.delete(p.id, expected_version=5)
        assert uow.products.delete(p.id, expected_version=1)
        assert not uow.products.delete(p.id)
        uow.commit()
    with uow:
        assert uow.products.get(p.id) is None


def test_idempotency_records(uow: AbstractUnitOfWork) -> None:
    p = product("SKU-1", price="3.10")
    record = IdempotencyRecord("client", "key-1", "f" * 64, p, T0)
    with uow:
        uow.idempotency.add(record)
        uow.commit()
    with uow:
        assert uow.idempotency.get("client", "key-1") == record
        assert uow.idempotency.get("other", "key-1") is None
    with pytest.raises(DuplicateKey) as err, uow:
        uow.idempotency.add(record)
    assert err.value.what == "idempotency_key"


def test_a_read_unit_lists_the_same_and_refuses_to_commit(tmp_path: Path) -> None:
    url = sqlite_url(tmp_path / "read.db")
    upgrade(metadata, MIGRATIONS_DIR, url)
    engine = create_db_engine(url)
    made = [product(f"R-{i}", price=f"{i}.00", at=i) for i in range(6)]
    add(SqlAlchemyUnitOfWork(engine), *made)
    reads = SqlAlchemyUnitOfWork(engine, read_through=True)
    criteria = [
        (ProductFilter(), None),
        (ProductFilter(min_price=Decimal("2"), max_price=Decimal("4.00")), None),
        (ProductFilter(category="misc"), made[1].sort_key),
        (ProductFilter(sku="R-3", q="thing"), None),
    ]
    for filters, after in criteria:  # a statement reused with other values gives their rows
        expected = [p for p in sorted(made, key=lambda p: p.sort_key) if filters.matches(p)]
        if after is not None:
            expected = [p for p in expected if p.sort_key > after]
        with reads:
            assert reads.products.list(filters, after, 10) == expected
    with reads, pytest.raises(RuntimeError, match="does not write"):
        reads.commit()
    engine.dispose()
