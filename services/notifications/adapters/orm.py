"""The notifications tables (SQLAlchemy Core), the inbox of processed events, the order
owners learnt from order events (payment events name no owner), and the outbox of the
`notification.sent` events written with each notification."""

from __future__ import annotations

from sqlalchemy import Column, DateTime, Index, MetaData, String, Table, Text

from chassis.messaging import inbox_table, outbox_table

__all__ = ["inbox", "metadata", "notifications", "order_owners", "outbox"]

metadata = MetaData()

notifications = Table(
    "notifications",
    metadata,
    Column("id", String(36), primary_key=True),
    Column("owner", String(255)),  # NULL until the order's owner is known
    Column("kind", String(16), nullable=False),
    Column("event_type", String(200), nullable=False),
    Column("event_id", String(64), nullable=False, unique=True),
    Column("order_id", String(64)),
    Column("subject", String(300), nullable=False),
    Column("body", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("read_at", DateTime(timezone=True)),
    Index("ix_notifications_owner_created", "owner", "created_at", "id"),
    Index("ix_notifications_order", "order_id"),
)

order_owners = Table(
    "order_owners",
    metadata,
    Column("order_id", String(64), primary_key=True),
    Column("owner", String(255), nullable=False),
)

inbox = inbox_table(metadata)
outbox = outbox_table(metadata)
