from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services.catalog.domain import InvalidProduct, Product, check_price, check_sku

T0 = datetime(2025, 1, 1, tzinfo=UTC)


def make(**kw: object) -> Product:
    args: dict[str, object] = {
        "sku": "BK-1",
        "name": "Book",
        "category": "books",
        "price": Decimal("10"),
    }
    args.update(kw)
    return Product.create(now=T0, **args)  # type: ignore[arg-type]


def test_create_sets_defaults_and_normalises_price() -> None:
    p = make()
    assert p.price == Decimal("10.00") and str(p.price) == "10.00"
    assert p.currency == "EUR" and p.version == 1
    assert p.created_at == p.updated_at == T0
    assert len(p.id) == 36


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("sku", "x"),
        ("sku", "bk-lower"),
        ("name", "   "),
        ("name", "n" * 201),
        ("category", "Books"),
        ("price", Decimal("-1")),
        ("price", Decimal("1.001")),
        ("price", Decimal("NaN")),
        ("price", Decimal("1000000.01")),
        ("description", "d" * 5001),
    ],
)
def test_create_refuses_invalid_values(field: str, value: object) -> None:
    with pytest.raises(InvalidProduct) as err:
        make(**{field: value})
    assert err.value.field == field


def test_update_bumps_version_only_on_change() -> None:
    p = make()
    later = T0 + timedelta(seconds=5)
    assert not p.update({"name": "Book"}, later)
    assert p.version == 1 and p.updated_at == T0
    assert p.update({"name": "Better Book", "price": Decimal("12.5")}, later)
    assert (p.name, p.price, p.version, p.updated_at) == ("Better Book", Decimal("12.50"), 2, later)


def test_update_refuses_non_editable_fields() -> None:
    with pytest.raises(InvalidProduct) as err:
        make().update({"id": "other"})
    assert err.value.field == "id"


def test_checks_return_messages() -> None:
    assert check_sku("AB-12") is None
    assert check_price(Decimal("0.00")) is None
    assert "decimal places" in (check_price(Decimal("0.123")) or "")
