"""The storage interface the use cases depend on; SQL and in-memory implementations follow it.

Storage-level conflicts (a unique sku taken, an idempotency key already stored, a version that
moved underneath us) are translated to the exceptions here, in one place per adapter.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from ..domain import Product, SortKey

__all__ = [
    "AbstractIdempotencyStore",
    "AbstractProductRepository",
    "DuplicateKey",
    "IdempotencyRecord",
    "ProductFilter",
    "StaleVersion",
]


class DuplicateKey(Exception):
    """A unique value is already stored; `what` is "sku" or "idempotency_key"."""

    def __init__(self, what: str) -> None:
        super().__init__(f"duplicate {what}")
        self.what = what


class StaleVersion(Exception):
    """The row changed (or vanished) since it was read: optimistic locking lost."""


@dataclass(frozen=True)
class ProductFilter:
    category: str | None = None
    q: str | None = None
    min_price: Decimal | None = None
    max_price: Decimal | None = None
    sku: str | None = None  # exact match: how the orders saga looks up prices

    def is_sku_lookup(self) -> bool:
        """True when `sku` is the only criterion (an exact lookup, not a search)."""
        return self == ProductFilter(sku=self.sku)

    def matches(self, product: Product) -> bool:
        """The filter as a predicate, for in-memory adapters (SQL builds a WHERE clause)."""
        return (
            (self.category is None or product.category == self.category)
            and (self.q is None or self.q.lower() in product.name.lower())
            and (self.min_price is None or product.price >= self.min_price)
            and (self.max_price is None or product.price <= self.max_price)
            and (self.sku is None or product.sku == self.sku)
        )


@dataclass(frozen=True)
class IdempotencyRecord:
    """The first result of a create, kept so a retry with the same key gets it back."""

    owner: str
    key: str
    fingerprint: str
    product: Product
    created_at: datetime


class AbstractProductRepository(abc.ABC):
    @abc.abstractmethod
    def add(self, product: Product) -> None:
        """Store a new product; raises DuplicateKey("sku")."""

    @abc.abstractmethod
    def get(self, product_id: str) -> Product | None: ...

    @abc.abstractmethod
    def get_by_sku(self, sku: str) -> Product | None: ...

    @abc.abstractmethod
    def list(self, filters: ProductFilter, after: SortKey | None, limit: int) -> list[Product]:
        """Up to `limit` products matching `filters`, in SortKey order, strictly after `after`."""

    @abc.abstractmethod
    def update(self, product: Product, expected_version: int) -> None:
        """Write `product` if the stored version is still `expected_version`, else StaleVersion."""

    @abc.abstractmethod
    def delete(self, product_id: str, expected_version: int | None = None) -> bool:
        """Remove the product; False when absent (or, with a version, when it moved)."""


class AbstractIdempotencyStore(abc.ABC):
    @abc.abstractmethod
    def get(self, owner: str, key: str) -> IdempotencyRecord | None: ...

    @abc.abstractmethod
    def add(self, record: IdempotencyRecord) -> None:
        """Store the record; raises DuplicateKey("idempotency_key") if the key is taken."""
