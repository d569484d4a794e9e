"""Product, the catalog's one aggregate, and the value rules every layer shares.

The checks return an error message or None so that the marshmallow schemas can reuse them
(one place for each rule) while the entity still refuses an invalid state on its own.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

__all__ = [
    "CATEGORY_PATTERN",
    "CURRENCY",
    "MAX_DESCRIPTION",
    "MAX_NAME",
    "PRICE_DIGITS",
    "PRICE_PLACES",
    "SKU_PATTERN",
    "InvalidProduct",
    "Product",
    "SortKey",
    "check_category",
    "check_description",
    "check_name",
    "check_price",
    "check_sku",
]

CURRENCY = "EUR"
MAX_PRICE = Decimal("1000000.00")
CENT = Decimal("0.01")
# What a price may be written with: bounds checked on the text, before any arithmetic.
PRICE_DIGITS = len(str(int(MAX_PRICE)))
PRICE_PLACES = 2

# The documents state these very patterns (schemas.py), so API and entity agree.
SKU_PATTERN = r"^[A-Z0-9][A-Z0-9-]{2,63}$"
CATEGORY_PATTERN = r"^[a-z0-9][a-z0-9-]{0,63}$"
MAX_NAME = 200
MAX_DESCRIPTION = 5000
_SKU = re.compile(SKU_PATTERN)
_CATEGORY = re.compile(CATEGORY_PATTERN)


class InvalidProduct(ValueError):
    """A value breaks a product rule; `field` names the offending attribute."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def check_sku(value: str) -> str | None:
    if not _SKU.fullmatch(value):
        return "must be 3-64 characters of A-Z, 0-9 and '-', starting with a letter or digit"
    return None


def check_name(value: str) -> str | None:
    if not value.strip():
        return "must not be blank"
    if len(value) > MAX_NAME:
        return f"must be at most {MAX_NAME} characters"
    return None


def check_description(value: str) -> str | None:
    if len(value) > MAX_DESCRIPTION:
        return f"must be at most {MAX_DESCRIPTION} characters"
    return None


def check_category(value: str) -> str | None:
    if not _CATEGORY.fullmatch(value):
        return "must be 1-64 characters of a-z, 0-9 and '-', starting with a letter or digit"
    return None


def check_price(value: Decimal) -> str | None:
    try:
        if not value.is_finite() or value != value.quantize(CENT):
            return "must have at most 2 decimal places"
    except InvalidOperation:
        return "must have at most 2 decimal places"
    if value.is_signed():  # negative, or negative zero ("-0.00")
        return f"must be between 0.00 and {MAX_PRICE}"
    if value > MAX_PRICE:
        return f"must be between 0.00 and {MAX_PRICE}"
    return None


_CHECKS: dict[str, Callable[[Any], str | None]] = {
    "sku": check_sku,
    "name": check_name,
    "description": check_description,
    "category": check_category,
    "price": check_price,
}
EDITABLE = frozenset(_CHECKS)


def _checked(name: str, value: Any) -> Any:
    error = _CHECKS[name](value)
    if error:
        raise InvalidProduct(name, error)
    return value.quantize(CENT) if name == "price" else value


def utcnow() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True, order=True)
class SortKey:
    """The listing order: creation time, then id to break ties. Cursors encode one of these."""

    created_at: datetime
    id: str


@dataclass
class Product:
    id: str
    sku: str
    name: str
    category: str
    price: Decimal
    description: str = ""
    currency: str = CURRENCY
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)
    version: int = 1

    @classmethod
    def create(
        cls,
        *,
        sku: str,
        name: str,
        category: str,
        price: Decimal,
        description: str = "",
        now: datetime | None = None,
        id: str | None = None,
    ) -> Product:
        """A new product with every value checked; ids are random UUIDs (not guessable)."""
        now = now or utcnow()
        return cls(
            id=id or str(uuid.uuid4()),
            sku=_checked("sku", sku),
            name=_checked("name", name),
            category=_checked("category", category),
            price=_checked("price", price),
            description=_checked("description", description),
            created_at=now,
            updated_at=now,
        )

    @property
    def sort_key(self) -> SortKey:
        return SortKey(self.created_at, self.id)

    def update(self, changes: Mapping[str, Any], now: datetime | None = None) -> bool:
        """Apply the editable `changes`; bump version and updated_at only if something changed."""
        unknown = set(changes) - EDITABLE
        if unknown:
            name = sorted(unknown)[0]
            raise InvalidProduct(name, "cannot be changed")
        checked = {name: _checked(name, value) for name, value in changes.items()}
        changed = {k: v for k, v in checked.items() if getattr(self, k) != v}
        if not changed:
            return False
        for name, value in changed.items():
            setattr(self, name, value)
        self.updated_at = now or utcnow()
        self.version += 1
        return True
