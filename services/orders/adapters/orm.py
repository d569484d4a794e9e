"""The orders tables (SQLAlchemy Core): orders with their saga state, lines, and the outbox.

Money is stored as integer cents (exact, and SQLite has no DECIMAL); the saga's timing fields
(`next_attempt_at`, `lease_until`) are epoch seconds so that claims compare plain numbers.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from chassis.messaging import outbox_table

__all__ = ["metadata", "order_lines", "order_traces", "orders", "outbox"]

metadata = MetaData()

orders = Table(
    "orders",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("owner", String(255), nullable=False),
    Column("idempotency_key", String(255), nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("payment_method", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("currency", String(3), nullable=False),
    Column("total_cents", BigInteger),
    Column("reason", Text),
    Column("payment_id", String(64)),
    Column("correlation_id", String(128)),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Column("version", Integer, nullable=False),
    # The saga, stored with the order and changed in the same transaction as its events.
    Column("step", String(16), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text),
    Column("next_attempt_at", Float, nullable=False),
    Column("lease_owner", String(64)),
    Column("lease_until", Float),
    UniqueConstraint("owner", "idempotency_key", name="uq_orders_owner_key"),
    Index("ix_orders_owner_created", "owner", "created_at", "id"),
    Index("ix_orders_due", "step", "next_attempt_at"),
)

# The W3C traceparent of the request that placed an order (only with tracing on): every saga
# step, whenever and wherever it runs, is a span of that request's trace. A table of its own,
# not a column of `orders`: `init` creates missing tables on an existing database but never
# alters one (ADR 0003), so databases made before tracing keep working.
order_traces = Table(
    "order_traces",
    metadata,
    Column("order_id", String(36), ForeignKey("orders.id"), primary_key=True),
    Column("traceparent", String(128), nullable=False),
)

order_lines = Table(
    "order_lines",
    metadata,
    Column("order_id", String(36), ForeignKey("orders.id"), primary_key=True),
    Column("position", Integer, primary_key=True),
    Column("sku", String(64), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("unit_price_cents", BigInteger),
)

outbox = outbox_table(metadata)
