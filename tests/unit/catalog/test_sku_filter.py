"""`GET /api/v1/products?sku=...`: the exact-sku lookup the orders saga prices items with."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from services.catalog.adapters.repository import ProductFilter
from services.catalog.domain import Product
from services.catalog.domain.model import utcnow

from .conftest import Api


def test_sku_filter_finds_exactly_one_product(api: Api) -> None:
    api.create(sku="BK-0001", name="Book", category="books", price="39.90")
    api.create(sku="BK-00010", name="Other book", category="books", price="5")

    def items(**params: Any) -> list[dict[str, Any]]:
        resp = api.list(**params)
        assert resp.status_code == 200, resp.get_json()
        return resp.get_json()["items"]  # type: ignore[no-any-return]

    found = items(sku="BK-0001")
    assert [(p["sku"], p["price"], p["currency"]) for p in found] == [("BK-0001", "39.90", "EUR")]
    assert items(sku="NO-SUCH") == []
    assert items(sku="BK-0001", category="toys") == []


def test_malformed_sku_is_422(api: Api) -> None:
    resp = api.list(sku="bad sku!")
    assert resp.status_code == 422
    assert "sku" in resp.get_json()["errors"]


def test_filter_predicate_matches_sql_semantics() -> None:
    product = Product.create(
        sku="BK-0001", name="Book", category="books", price=Decimal(1), now=utcnow()
    )
    assert ProductFilter(sku="BK-0001").matches(product)
    assert not ProductFilter(sku="bk-0001").matches(product)
