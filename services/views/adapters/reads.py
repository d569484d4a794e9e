"""The read models' queries: plain functions of a blocking connection, run outside a
transaction by `chassis.db.reader` (ADR 0026). Each answer is one statement."""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Connection, and_, func, or_, select

from ..domain import OrderView
from .orm import order_notifications, order_views, pairs, products, sales_daily

__all__ = [
    "SalesRow",
    "bought_with",
    "everything",
    "my_orders",
    "product_ids",
    "product_sku",
    "sales",
    "totals",
]

SalesRow = tuple[str, str, str, int, int]  # day, currency, sku, units, revenue cents


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def my_orders(
    conn: Connection, owner: str, before: tuple[datetime, str] | None, limit: int
) -> list[OrderView]:
    """The owner's orders with their notification counts, newest first (one query)."""
    c = order_views.c
    count = func.coalesce(order_notifications.c.count, 0).label("notifications")
    stmt = (
        select(order_views, count)
        .select_from(
            order_views.outerjoin(order_notifications, order_notifications.c.order_id == c.order_id)
        )
        .where(c.owner == owner)
        .order_by(c.created_at.desc(), c.order_id.desc())
        .limit(limit)
    )
    if before is not None:
        at = before[0].astimezone(UTC)
        if conn.dialect.name == "sqlite":
            at = at.replace(tzinfo=None)
        stmt = stmt.where(or_(c.created_at < at, and_(c.created_at == at, c.order_id < before[1])))
    return [
        OrderView(
            order_id=r.order_id,
            owner=r.owner,
            status=r.status,
            payment_state=r.payment_state,
            currency=r.currency,
            items=list(r.items),
            created_at=_aware(r.created_at),
            updated_at=_aware(r.updated_at),
            version=r.version,
            position=r.position,
            total=r.total,
            payment_id=r.payment_id,
            captured_amount=r.captured_amount,
            confirmed_day=r.confirmed_day,
            notifications=r.notifications,
        )
        for r in conn.execute(stmt)
    ]


def sales(
    conn: Connection, first: date, last: date, after: tuple[str, str, str] | None, limit: int
) -> list[SalesRow]:
    """Units and revenue per day, currency and sku in [first, last], in that order."""
    c = sales_daily.c
    stmt = (
        select(c.day, c.currency, c.sku, c.units, c.revenue_cents)
        .where(c.day >= first.isoformat(), c.day <= last.isoformat())
        .order_by(c.day, c.currency, c.sku)
        .limit(limit)
    )
    if after is not None:
        d, cur, sku = after
        stmt = stmt.where(
            or_(
                c.day > d,
                and_(c.day == d, c.currency > cur),
                and_(c.day == d, c.currency == cur, c.sku > sku),
            )
        )
    return [tuple(r) for r in conn.execute(stmt)]  # type: ignore[misc]


def totals(conn: Connection, first: date, last: date) -> list[tuple[str, int, int]]:
    """(currency, units, revenue cents) over the whole range."""
    c = sales_daily.c
    stmt = (
        select(c.currency, func.sum(c.units), func.sum(c.revenue_cents))
        .where(c.day >= first.isoformat(), c.day <= last.isoformat())
        .group_by(c.currency)
        .order_by(c.currency)
    )
    return [(r[0], int(r[1]), int(r[2])) for r in conn.execute(stmt)]


def product_sku(conn: Connection, product_id: str) -> str | None:
    row = conn.execute(
        select(products.c.sku).where(products.c.product_id == product_id, ~products.c.deleted)
    ).first()
    return row.sku if row else None


def product_ids(conn: Connection, skus: list[str]) -> dict[str, str]:
    if not skus:
        return {}
    stmt = select(products.c.sku, products.c.product_id).where(
        products.c.sku.in_(skus), ~products.c.deleted
    )
    return {r.sku: r.product_id for r in conn.execute(stmt)}


def bought_with(conn: Connection, sku: str, limit: int) -> list[tuple[str, int]]:
    """Skus confirmed in the same orders as `sku`, most often first."""
    stmt = (
        select(pairs.c.other, pairs.c.orders)
        .where(pairs.c.sku == sku)
        .order_by(pairs.c.orders.desc(), pairs.c.other)
        .limit(limit)
    )
    return [(r.other, r.orders) for r in conn.execute(stmt)]


def everything(conn: Connection) -> dict[str, Any]:
    """Every order-derived row, for comparing the models before and after a rebuild."""
    out: dict[str, Any] = {}
    for table in (order_views, sales_daily, pairs):
        rows = conn.execute(select(table).order_by(*table.primary_key.columns)).all()
        out[table.name] = [tuple(r) for r in rows]
    return out
