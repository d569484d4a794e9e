"""The SQL the projector writes with, on the blocking connection of one transaction (the
consumer's inbox transaction, or a catch-up page's).

A stream's row is written only from the version it was read at (`UPDATE .. WHERE version = n`,
or an INSERT that the primary key refuses twice), so two writers can never both apply the
same event: the loser's transaction fails and its event is tried again.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Table, delete, insert, select, update
from sqlalchemy.dialects import postgresql, sqlite

from ..domain import OrderView, Sale
from .orm import (
    PROJECTED,
    checkpoint,
    order_notifications,
    order_views,
    pairs,
    products,
    sales_daily,
)

__all__ = [
    "Checkpoint",
    "ConcurrentApply",
    "add_notification",
    "add_sale",
    "clear_projections",
    "load_view",
    "read_checkpoint",
    "save_checkpoint",
    "save_view",
    "upsert_product",
]


class ConcurrentApply(Exception):
    """Another writer applied this stream's event first; the transaction must roll back."""


Checkpoint = tuple[int, float | None, datetime | None]  # position, last lag, last applied


def _aware(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _db_time(conn: Connection, value: datetime) -> datetime:
    return value.astimezone(UTC).replace(tzinfo=None) if conn.dialect.name == "sqlite" else value


def _upsert(
    conn: Connection, table: Table, values: dict[str, Any], keys: list[str], add: list[str]
) -> None:
    """INSERT, or add `add`'s values to the row with the same `keys`."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    stmt = dialect.insert(table).values(values)
    stmt = stmt.on_conflict_do_update(
        index_elements=keys, set_={c: table.c[c] + stmt.excluded[c] for c in add}
    )
    conn.execute(stmt)


def load_view(conn: Connection, order_id: str) -> OrderView | None:
    row = conn.execute(select(order_views).where(order_views.c.order_id == order_id)).first()
    if row is None:
        return None
    return OrderView(
        order_id=row.order_id,
        owner=row.owner,
        status=row.status,
        payment_state=row.payment_state,
        currency=row.currency,
        items=list(row.items),
        created_at=_aware(row.created_at),  # type: ignore[arg-type]
        updated_at=_aware(row.updated_at),  # type: ignore[arg-type]
        version=row.version,
        position=row.position,
        total=row.total,
        payment_id=row.payment_id,
        captured_amount=row.captured_amount,
        confirmed_day=row.confirmed_day,
    )


def save_view(conn: Connection, view: OrderView, read_version: int) -> None:
    values = {
        "owner": view.owner,
        "status": view.status,
        "payment_state": view.payment_state,
        "payment_id": view.payment_id,
        "captured_amount": view.captured_amount,
        "total": view.total,
        "currency": view.currency,
        "items": view.items,
        "created_at": _db_time(conn, view.created_at),
        "updated_at": _db_time(conn, view.updated_at),
        "confirmed_day": view.confirmed_day,
        "version": view.version,
        "position": view.position,
    }
    if read_version == 0:  # a second INSERT of the stream fails on the primary key
        conn.execute(insert(order_views).values(order_id=view.order_id, **values))
        return
    done = conn.execute(
        update(order_views)
        .where(order_views.c.order_id == view.order_id, order_views.c.version == read_version)
        .values(**values)
    )
    if done.rowcount != 1:
        raise ConcurrentApply(f"order {view.order_id} moved past version {read_version}")


def add_sale(conn: Connection, sale: Sale) -> None:
    for sku, units, revenue in sale.lines:
        _upsert(
            conn,
            sales_daily,
            {
                "day": sale.day,
                "sku": sku,
                "currency": sale.currency,
                "units": units,
                "revenue_cents": revenue,
            },
            ["day", "sku", "currency"],
            ["units", "revenue_cents"],
        )
    skus = sale.skus
    for a in skus:
        for b in skus:
            if a != b:
                _upsert(
                    conn, pairs, {"sku": a, "other": b, "orders": 1}, ["sku", "other"], ["orders"]
                )


def add_notification(conn: Connection, order_id: str) -> None:
    _upsert(conn, order_notifications, {"order_id": order_id, "count": 1}, ["order_id"], ["count"])


def upsert_product(
    conn: Connection, product_id: str, sku: str, version: int, deleted: bool
) -> None:
    """Remember a product's sku; an older version than the one known changes nothing."""
    row = conn.execute(
        select(products.c.version).where(products.c.product_id == product_id)
    ).first()
    values = {"sku": sku, "version": version, "deleted": deleted}
    if row is None:
        conn.execute(insert(products).values(product_id=product_id, **values))
    elif version >= row.version:
        conn.execute(update(products).where(products.c.product_id == product_id).values(**values))


def read_checkpoint(conn: Connection) -> Checkpoint:
    row = conn.execute(select(checkpoint).where(checkpoint.c.id == 1)).first()
    if row is None:
        return 0, None, None
    return row.position, row.last_lag, _aware(row.last_applied_at)


def save_checkpoint(conn: Connection, position: int, lag: float, applied_at: datetime) -> None:
    """Keep the highest position applied, and the last event's lag."""
    known = conn.execute(select(checkpoint.c.position).where(checkpoint.c.id == 1)).first()
    values = {"last_lag": lag, "last_applied_at": _db_time(conn, applied_at)}
    if known is None:
        conn.execute(insert(checkpoint).values(id=1, position=position, **values))
    else:
        values["position"] = max(known.position, position)
        conn.execute(update(checkpoint).where(checkpoint.c.id == 1).values(**values))


def clear_projections(conn: Connection) -> None:
    """Empty what `rebuild` refills from orders' history (children first)."""
    for table in reversed(PROJECTED):
        conn.execute(delete(table))
