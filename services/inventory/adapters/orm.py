"""The inventory's tables (SQLAlchemy Core), the outbox included (same database, same commit)."""

from __future__ import annotations

from sqlalchemy import (
    CheckConstraint,
    Column,
    ForeignKey,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)

from chassis.messaging import outbox_table

__all__ = ["metadata", "outbox", "reservation_lines", "reservations", "stock"]

metadata = MetaData()

# The CHECKs are the last line of defence: no code path can make stock negative or oversell.
stock = Table(
    "stock",
    metadata,
    Column("sku", String(64), primary_key=True),
    Column("on_hand", Integer, nullable=False),
    Column("reserved", Integer, nullable=False, default=0),
    CheckConstraint("reserved >= 0", name="ck_stock_reserved_not_negative"),
    CheckConstraint("reserved <= on_hand", name="ck_stock_not_oversold"),
)

reservations = Table(
    "reservations",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("status", String(16), nullable=False),
    # JSON list of {sku, requested, available} for REJECTED reservations.
    Column("shortages", Text, nullable=False, default="[]"),
)

reservation_lines = Table(
    "reservation_lines",
    metadata,
    Column("order_id", String(64), ForeignKey("reservations.order_id"), nullable=False),
    Column("sku", String(64), nullable=False),
    Column("quantity", Integer, nullable=False),
    PrimaryKeyConstraint("order_id", "sku", name="pk_reservation_lines"),
)

outbox = outbox_table(metadata)
