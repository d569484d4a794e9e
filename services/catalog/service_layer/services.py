"""The catalog's use cases. Each runs in one unit of work and speaks in domain terms only.

A change records its product event (`product.created|updated|deleted`) on the unit of work,
which writes it with the change (the transactional outbox); a no-op update records none.

Exceptions::

    CatalogError
     +-- ProductNotFound       (404)
     +-- Conflict              (409)  +-- DuplicateSku
     |                                +-- ConcurrentUpdate (the row moved between read and write)
     +-- PreconditionFailed    (412: If-Match did not match the current version)
     +-- IdempotencyKeyReused  (422: same key, different request)
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson

from ..adapters.repository import DuplicateKey, IdempotencyRecord, ProductFilter, StaleVersion
from ..domain import Product, ProductCreated, ProductDeleted, ProductUpdated, SortKey
from ..domain.model import utcnow
from .unit_of_work import AbstractUnitOfWork

__all__ = [
    "CatalogError",
    "ConcurrentUpdate",
    "Conflict",
    "Created",
    "DuplicateSku",
    "IdempotencyKeyReused",
    "NewProduct",
    "Page",
    "PreconditionFailed",
    "ProductNotFound",
    "create_product",
    "delete_product",
    "get_product",
    "list_products",
    "update_product",
]

Clock = Callable[[], datetime]


class CatalogError(Exception):
    pass


class ProductNotFound(CatalogError):
    pass


class Conflict(CatalogError):
    pass


class DuplicateSku(Conflict):
    pass


class ConcurrentUpdate(Conflict):
    pass


class PreconditionFailed(CatalogError):
    pass


class IdempotencyKeyReused(CatalogError):
    pass


@dataclass(frozen=True)
class NewProduct:
    sku: str
    name: str
    category: str
    price: Decimal
    description: str = ""

    def fingerprint(self) -> str:
        """Same request, same fingerprint: what an idempotency key is bound to.

        Equal prices written differently (`1`, `"1.00"`) are the same request.
        """
        fields = {**asdict(self), "price": str(self.price.normalize())}
        canonical = orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(canonical).hexdigest()


@dataclass(frozen=True)
class Page:
    items: list[Product]
    next: SortKey | None


@dataclass(frozen=True)
class Created:
    product: Product
    replayed: bool


def list_products(
    uow: AbstractUnitOfWork, filters: ProductFilter, after: SortKey | None, limit: int
) -> Page:
    if filters.sku is not None and after is None and filters.is_sku_lookup():
        # An exact sku names at most one product (the orders saga's price lookup): a get by
        # sku, which a cached repository may answer without the database.
        with uow:
            found = uow.products.get_by_sku(filters.sku)
        return Page([found] if found is not None and limit > 0 else [], None)
    with uow:
        rows = uow.products.list(filters, after, limit + 1)  # one more says "there is a next page"
    items = rows[:limit]
    return Page(items, items[-1].sort_key if len(rows) > limit else None)


def get_product(uow: AbstractUnitOfWork, product_id: str) -> Product:
    with uow:
        product = uow.products.get(product_id)
    if product is None:
        raise ProductNotFound(product_id)
    return product


def _replay(record: IdempotencyRecord, fingerprint: str) -> Created:
    if record.fingerprint != fingerprint:
        raise IdempotencyKeyReused(record.key)
    return Created(record.product, replayed=True)


def create_product(
    uow: AbstractUnitOfWork,
    cmd: NewProduct,
    *,
    idempotency: tuple[str, str] | None = None,
    clock: Clock = utcnow,
) -> Created:
    """Create a product; with `idempotency=(owner, key)` a retry returns the first result."""
    fingerprint = cmd.fingerprint()
    with uow:
        if idempotency is not None:
            record = uow.idempotency.get(*idempotency)
            if record is not None:
                return _replay(record, fingerprint)
        if uow.products.get_by_sku(cmd.sku) is not None:
            raise DuplicateSku(cmd.sku)
        now = clock()
        product = Product.create(
            sku=cmd.sku,
            name=cmd.name,
            category=cmd.category,
            price=cmd.price,
            description=cmd.description,
            now=now,
        )
        try:
            uow.products.add(product)
            if idempotency is not None:
                owner, key = idempotency
                uow.idempotency.add(IdempotencyRecord(owner, key, fingerprint, product, now))
            uow.record(ProductCreated(product.id, product.sku, product.version))
            uow.commit()
            return Created(product, replayed=False)
        except DuplicateKey:
            pass  # a concurrent request won; below, look at what it stored
    if idempotency is not None:
        with uow:
            record = uow.idempotency.get(*idempotency)
        if record is not None:
            return _replay(record, fingerprint)
    raise DuplicateSku(cmd.sku)


def update_product(
    uow: AbstractUnitOfWork,
    product_id: str,
    changes: Mapping[str, Any],
    *,
    expected_version: int | None = None,
    clock: Clock = utcnow,
) -> Product:
    """Apply `changes` (PATCH: some fields, PUT: all); optimistic locking on `version`."""
    with uow:
        product = uow.products.get(product_id)
        if product is None:
            raise ProductNotFound(product_id)
        if expected_version is not None and product.version != expected_version:
            raise PreconditionFailed(product_id)
        read_version = product.version
        if not product.update(changes, clock()):
            return product
        other = uow.products.get_by_sku(product.sku)
        if other is not None and other.id != product.id:
            raise DuplicateSku(product.sku)
        try:
            uow.products.update(product, read_version)
        except DuplicateKey as exc:
            raise DuplicateSku(product.sku) from exc
        except StaleVersion as exc:
            raise ConcurrentUpdate(product_id) from exc
        uow.record(ProductUpdated(product.id, product.sku, product.version))
        uow.commit()
    return product


def delete_product(
    uow: AbstractUnitOfWork, product_id: str, *, expected_version: int | None = None
) -> None:
    with uow:
        product = uow.products.get(product_id)
        if product is None:
            raise ProductNotFound(product_id)
        if expected_version is not None and product.version != expected_version:
            raise PreconditionFailed(product_id)
        if not uow.products.delete(product_id, product.version):
            raise ConcurrentUpdate(product_id)
        uow.record(ProductDeleted(product.id, product.sku, product.version))
        uow.commit()
