"""The read-side tables (SQLAlchemy Core).

Projected from orders' streams (dropped and rebuilt by `rebuild`): `order_views` (one row per
order, also its stream's applied version and position), `sales_daily`, `pairs` and the
single-row `checkpoint`. Fed by other publishers (kept by `rebuild`, which cannot derive them
from orders' history): `order_notifications` (notification.sent counts) and `products`
(catalog's product id <-> sku). `inbox` is the chassis consumer's record of delivered events.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
)

from chassis.messaging import inbox_table

__all__ = [
    "PROJECTED",
    "checkpoint",
    "inbox",
    "metadata",
    "order_notifications",
    "order_views",
    "pairs",
    "products",
    "sales_daily",
]

metadata = MetaData()
_BIG = BigInteger().with_variant(Integer, "sqlite")

order_views = Table(
    "order_views",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("owner", String(255), nullable=False),
    Column("status", String(16), nullable=False),  # PENDING | CONFIRMED | REJECTED
    Column("payment_state", String(16), nullable=False),  # pending|captured|declined|refunded
    Column("payment_id", String(64)),
    Column("captured_amount", String(32)),  # money as text, as on the wire
    Column("total", String(32)),
    Column("currency", String(3), nullable=False),
    Column("items", JSON, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("confirmed_day", String(10)),  # UTC date of order.confirmed
    Column("version", Integer, nullable=False),  # the stream's last applied version
    Column("position", _BIG, nullable=False),  # that event's feed position (0: unknown)
    Index("ix_order_views_owner_created", "owner", "created_at", "order_id"),
)

order_notifications = Table(
    "order_notifications",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("count", Integer, nullable=False),
)

sales_daily = Table(
    "sales_daily",
    metadata,
    Column("day", String(10), primary_key=True),
    Column("sku", String(64), primary_key=True),
    Column("currency", String(3), primary_key=True),
    Column("units", _BIG, nullable=False),
    Column("revenue_cents", _BIG, nullable=False),
)

pairs = Table(  # both directions are stored: one indexed lookup per product
    "pairs",
    metadata,
    Column("sku", String(64), primary_key=True),
    Column("other", String(64), primary_key=True),
    Column("orders", Integer, nullable=False),
)

products = Table(
    "products",
    metadata,
    Column("product_id", String(64), primary_key=True),
    Column("sku", String(64), nullable=False),
    Column("version", Integer, nullable=False),
    Column("deleted", Boolean, nullable=False),
    Index("ix_products_sku", "sku"),
)

checkpoint = Table(  # one row, id 1
    "checkpoint",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("position", _BIG, nullable=False),  # the highest feed position applied
    Column("last_lag", Float),  # seconds from occurred_at to applied, of the last event
    Column("last_applied_at", DateTime(timezone=True)),
)

inbox = inbox_table(metadata)

# What `rebuild` empties and refills from orders' history.
PROJECTED = (order_views, sales_daily, pairs, checkpoint)
