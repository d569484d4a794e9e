"""In-memory repositories with the SQL adapters' behaviour, for fast use-case tests."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

from ..domain import Product, SortKey
from .repository import (
    AbstractIdempotencyStore,
    AbstractProductRepository,
    DuplicateKey,
    IdempotencyRecord,
    ProductFilter,
    StaleVersion,
)

__all__ = ["MemoryIdempotencyStore", "MemoryProductRepository", "MemoryStore"]


@dataclass
class MemoryStore:
    """The "database": shared by every unit of work built on it."""

    products: dict[str, Product] = field(default_factory=dict)
    idempotency: dict[tuple[str, str], IdempotencyRecord] = field(default_factory=dict)

    def copy(self) -> MemoryStore:
        return copy.deepcopy(self)


class MemoryProductRepository(AbstractProductRepository):
    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    def add(self, product: Product) -> None:
        if any(p.sku == product.sku for p in self.store.products.values()):
            raise DuplicateKey("sku")
        self.store.products[product.id] = copy.deepcopy(product)

    def get(self, product_id: str) -> Product | None:
        found = self.store.products.get(product_id)
        return copy.deepcopy(found) if found else None

    def get_by_sku(self, sku: str) -> Product | None:
        for p in self.store.products.values():
            if p.sku == sku:
                return copy.deepcopy(p)
        return None

    def list(self, filters: ProductFilter, after: SortKey | None, limit: int) -> list[Product]:
        rows = sorted(
            (p for p in self.store.products.values() if filters.matches(p)),
            key=lambda p: p.sort_key,
        )
        if after is not None:
            rows = [p for p in rows if p.sort_key > after]
        return [copy.deepcopy(p) for p in rows[:limit]]

    def update(self, product: Product, expected_version: int) -> None:
        current = self.store.products.get(product.id)
        if current is None or current.version != expected_version:
            raise StaleVersion(product.id)
        if any(p.sku == product.sku and p.id != product.id for p in self.store.products.values()):
            raise DuplicateKey("sku")
        self.store.products[product.id] = copy.deepcopy(product)

    def delete(self, product_id: str, expected_version: int | None = None) -> bool:
        current = self.store.products.get(product_id)
        if current is None:
            return False
        if expected_version is not None and current.version != expected_version:
            return False
        del self.store.products[product_id]
        return True


class MemoryIdempotencyStore(AbstractIdempotencyStore):
    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    def get(self, owner: str, key: str) -> IdempotencyRecord | None:
        return self.store.idempotency.get((owner, key))

    def add(self, record: IdempotencyRecord) -> None:
        if (record.owner, record.key) in self.store.idempotency:
            raise DuplicateKey("idempotency_key")
        self.store.idempotency[(record.owner, record.key)] = record
