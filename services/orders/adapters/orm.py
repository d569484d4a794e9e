"""The orders tables (SQLAlchemy Core): the order event log (the source of truth, ADR 0029),
orders with their saga state (a cache of the fold of each order's events), lines, the outbox.

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

from chassis.eventstore import event_log_table
from chassis.messaging import outbox_table

__all__ = ["metadata", "order_events", "order_lines", "order_traces", "orders", "outbox"]

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
    # The event-sourced part of the cache: the stream's last version and when the current
    # saga step began (ORDERS_SAGA_STEP_TIMEOUT counts from it).
    Column("stream_version", Integer, nullable=False, default=0),
    Column("step_since", DateTime(timezone=True)),
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

# Every change of every order, appended in the transaction that writes its outbox row.
order_events = event_log_table(metadata, "order_events")
