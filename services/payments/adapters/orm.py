"""The payments tables (SQLAlchemy Core), the outbox included (same database, same commit)."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, Index, MetaData, String, Table

from chassis.messaging import outbox_table

__all__ = ["metadata", "outbox", "payments"]

metadata = MetaData()

payments = Table(
    "payments",
    metadata,
    Column("id", String(36), primary_key=True),
    # The one guarantee against double charges: one row, hence one capture, per key.
    Column("idempotency_key", String(255), nullable=False, unique=True),
    Column("fingerprint", String(64), nullable=False),
    Column("order_id", String(64), nullable=False),
    # Whose payment this is (a user id: the order's owner). Nullable: rows stored before the
    # column existed have none, and `init` adds the column to such a table (ADR 0011).
    Column("owner", String(255)),
    Column("amount_cents", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("payment_method", String(32), nullable=False),
    Column("status", String(16), nullable=False),
    Column("decline_code", String(64)),
    Column("created_at", String(40), nullable=False),
    Column("updated_at", String(40), nullable=False),
    # Epoch seconds of the current attempt: a PENDING row older than the lease is abandoned.
    Column("attempt_at", Float, nullable=False),
    Column("refund_key", String(255)),
    Column("refunded_at", String(40)),
    Index("ix_payments_order_id", "order_id"),
    Index("ix_payments_owner_created", "owner", "created_at"),
)

outbox = outbox_table(metadata)
