"""SQLAlchemy implementations of the repository interfaces, on one Connection per unit of work.

No savepoints: pysqlite's legacy transaction handling breaks them, and a constraint violation
ends the unit of work anyway (the use case starts a fresh one if it wants to look again).
"""

from __future__ import annotations

import functools
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import (
    Connection,
    Row,
    Select,
    and_,
    bindparam,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from ..domain import Product, SortKey
from .orm import idempotency_keys, products
from .repository import (
    AbstractIdempotencyStore,
    AbstractProductRepository,
    DuplicateKey,
    IdempotencyRecord,
    ProductFilter,
    StaleVersion,
)

__all__ = ["SqlIdempotencyStore", "SqlProductRepository", "product_from_snapshot", "snapshot"]


def _values(p: Product) -> dict[str, Any]:
    return {
        "id": p.id,
        "sku": p.sku,
        "name": p.name,
        "description": p.description,
        "category": p.category,
        "price_cents": p.price,
        "currency": p.currency,
        "created_at": p.created_at,
        "updated_at": p.updated_at,
        "version": p.version,
    }


def _product(row: Row[Any]) -> Product:
    """A row of `select(products)` (the table's column order; positional: the list page
    converts 20 of them per request, and mapping lookups by name were a good part of it)."""
    id_, sku, name, description, category, price, currency, created, updated, version = row
    return Product(
        id=id_,
        sku=sku,
        name=name,
        description=description,
        category=category,
        price=price,
        currency=currency,
        created_at=created,
        updated_at=updated,
        version=version,
    )


@functools.cache
def _list_statement(
    category: bool, min_price: bool, max_price: bool, sku: bool, after: bool
) -> Select[Any]:
    """The list query for one combination of criteria, with bound parameters: built (and its
    cache key computed) once instead of on every page."""
    c = products.c
    stmt = select(products).order_by(c.created_at, c.id).limit(bindparam("limit"))
    if category:
        stmt = stmt.where(c.category == bindparam("category"))
    if min_price:
        stmt = stmt.where(c.price_cents >= bindparam("min_price"))
    if max_price:
        stmt = stmt.where(c.price_cents <= bindparam("max_price"))
    if sku:
        stmt = stmt.where(c.sku == bindparam("sku"))
    if after:
        stmt = stmt.where(
            or_(
                c.created_at > bindparam("after_created_at"),
                and_(c.created_at == bindparam("after_created_at"), c.id > bindparam("after_id")),
            )
        )
    return stmt


class SqlProductRepository(AbstractProductRepository):
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def add(self, product: Product) -> None:
        try:
            self.conn.execute(insert(products).values(**_values(product)))
        except IntegrityError as exc:
            raise DuplicateKey("sku") from exc

    def get(self, product_id: str) -> Product | None:
        row = self.conn.execute(select(products).where(products.c.id == product_id)).first()
        return _product(row) if row else None

    def get_by_sku(self, sku: str) -> Product | None:
        row = self.conn.execute(select(products).where(products.c.sku == sku)).first()
        return _product(row) if row else None

    def list(self, filters: ProductFilter, after: SortKey | None, limit: int) -> list[Product]:
        stmt = _list_statement(
            filters.category is not None,
            filters.min_price is not None,
            filters.max_price is not None,
            filters.sku is not None,
            after is not None,
        )
        if filters.q:  # escaped as a literal (autoescape): not a bound parameter
            stmt = stmt.where(
                func.lower(products.c.name).contains(filters.q.lower(), autoescape=True)
            )
        params: dict[str, Any] = {
            "limit": limit,
            "category": filters.category,
            "min_price": filters.min_price,
            "max_price": filters.max_price,
            "sku": filters.sku,
        }
        if after is not None:
            params["after_created_at"] = after.created_at
            params["after_id"] = after.id
        return [_product(row) for row in self.conn.execute(stmt, params).all()]  # one fetchall

    def update(self, product: Product, expected_version: int) -> None:
        values = _values(product)
        del values["id"], values["created_at"]
        stmt = (
            update(products)
            .where(products.c.id == product.id, products.c.version == expected_version)
            .values(**values)
        )
        try:
            result = self.conn.execute(stmt)
        except IntegrityError as exc:
            raise DuplicateKey("sku") from exc
        if result.rowcount != 1:
            raise StaleVersion(product.id)

    def delete(self, product_id: str, expected_version: int | None = None) -> bool:
        stmt = delete(products).where(products.c.id == product_id)
        if expected_version is not None:
            stmt = stmt.where(products.c.version == expected_version)
        return self.conn.execute(stmt).rowcount == 1


def snapshot(product: Product) -> str:
    """The product as JSON text, kept with an idempotency key so a replay is the first result."""
    return orjson.dumps(
        {
            "id": product.id,
            "sku": product.sku,
            "name": product.name,
            "description": product.description,
            "category": product.category,
            "price": str(product.price),
            "currency": product.currency,
            "created_at": product.created_at.isoformat(),
            "updated_at": product.updated_at.isoformat(),
            "version": product.version,
        }
    ).decode()


def product_from_snapshot(text: str) -> Product:
    d = orjson.loads(text)
    return Product(
        id=d["id"],
        sku=d["sku"],
        name=d["name"],
        description=d["description"],
        category=d["category"],
        price=Decimal(d["price"]),
        currency=d["currency"],
        created_at=datetime.fromisoformat(d["created_at"]),
        updated_at=datetime.fromisoformat(d["updated_at"]),
        version=d["version"],
    )


class SqlIdempotencyStore(AbstractIdempotencyStore):
    def __init__(self, conn: Connection) -> None:
        self.conn = conn

    def get(self, owner: str, key: str) -> IdempotencyRecord | None:
        t = idempotency_keys.c
        row = self.conn.execute(
            select(idempotency_keys).where(t.owner == owner, t.key == key)
        ).first()
        if row is None:
            return None
        m = row._mapping
        return IdempotencyRecord(
            owner=m["owner"],
            key=m["key"],
            fingerprint=m["fingerprint"],
            product=product_from_snapshot(m["response"]),
            created_at=m["created_at"],
        )

    def add(self, record: IdempotencyRecord) -> None:
        values = {
            "owner": record.owner,
            "key": record.key,
            "fingerprint": record.fingerprint,
            "product_id": record.product.id,
            "response": snapshot(record.product),
            "created_at": record.created_at,
        }
        try:
            self.conn.execute(insert(idempotency_keys).values(**values))
        except IntegrityError as exc:
            raise DuplicateKey("idempotency_key") from exc
