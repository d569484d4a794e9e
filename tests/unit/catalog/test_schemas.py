from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal

import pytest
from marshmallow import ValidationError

from services.catalog.domain import Product, SortKey
from services.catalog.schemas import (
    ListQuerySchema,
    ProductInputSchema,
    ProductSchema,
    product_document,
)
from services.catalog.service_layer.demo import DEMO_PRODUCTS
from services.catalog.service_layer.pagination import encode_cursor

GOOD = {"sku": "EL-01", "name": "Lamp", "category": "home", "price": "19.9"}


def test_input_accepts_strings_and_numbers_for_price() -> None:
    assert ProductInputSchema().load(GOOD)["price"] == Decimal("19.9")
    assert ProductInputSchema().load({**GOOD, "price": 5})["price"] == Decimal(5)
    assert ProductInputSchema().load(GOOD)["description"] == ""


def test_input_names_every_bad_field() -> None:
    with pytest.raises(ValidationError) as err:
        ProductInputSchema().load(
            {"sku": "?", "name": "", "price": "1.234", "colour": "red"}, partial=False
        )
    assert set(err.value.messages) == {"sku", "name", "price", "category", "colour"}


@pytest.mark.parametrize("price", ["abc", "NaN", "Infinity", "-0.01", True])
def test_input_refuses_bad_prices(price: object) -> None:
    with pytest.raises(ValidationError) as err:
        ProductInputSchema().load({**GOOD, "price": price})
    assert "price" in err.value.messages


def test_partial_input_for_patch() -> None:
    assert ProductInputSchema().load({"name": "New"}, partial=True) == {"name": "New"}


def test_output_has_price_as_two_decimal_string() -> None:
    p = Product.create(sku="EL-01", name="Lamp", category="home", price=Decimal("19.9"))
    doc = ProductSchema().dump(p)
    assert doc["price"] == "19.90" and doc["currency"] == "EUR"
    assert doc["created_at"].endswith("+00:00")
    assert set(doc) == {
        "id",
        "sku",
        "name",
        "description",
        "category",
        "price",
        "currency",
        "created_at",
        "updated_at",
        "version",
    }


def test_query_defaults_and_casts() -> None:
    key = SortKey(datetime(2025, 1, 1, tzinfo=UTC), "x")
    args = ListQuerySchema().load(
        {"min_price": "1.5", "cursor": encode_cursor(key), "unknown": "ignored"}
    )
    assert args == {"limit": 20, "min_price": Decimal("1.5"), "cursor": key}


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"min_price": "cheap"}, "min_price"),
        ({"max_price": "-1"}, "max_price"),
        ({"min_price": "10", "max_price": "5"}, "max_price"),
        ({"cursor": "garbage"}, "cursor"),
        ({"q": ""}, "q"),
    ],
)
def test_query_errors_name_the_parameter(params: dict[str, str], field: str) -> None:
    with pytest.raises(ValidationError) as err:
        ListQuerySchema().load(params)
    assert field in err.value.messages


@pytest.mark.parametrize(
    "product",
    [
        *(
            Product.create(sku=p.sku, name=p.name, category=p.category, price=p.price)
            for p in DEMO_PRODUCTS[:3]
        ),
        Product("id-1", "BK-1", "Ünïcode “name”", "books", Decimal("12.5"), description=""),
        Product("id-2", "BK-2", "Whole", "books", Decimal("3"), version=7),
        Product(
            "id-3",
            "BK-3",
            "Micro",
            "books",
            Decimal("0.10"),
            created_at=datetime(2025, 1, 1, 12, 0, 0, 123456, tzinfo=UTC),
            updated_at=datetime(2025, 2, 1, tzinfo=UTC),
        ),
    ],
)
def test_product_document_is_the_schemas_dump(product: Product) -> None:
    # the list's hand-written dump must give what ProductSchema documents and gave before
    assert product_document(product) == ProductSchema().dump(product)
    assert list(product_document(product)) == list(ProductSchema().dump(product))
