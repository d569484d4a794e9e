"""Rows of every age for the retention tests, on SQLite (unit) and PostgreSQL (integration)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Engine, MetaData, Table, select

from chassis.messaging import inbox_table, outbox_table
from chassis.retention import PurgeTarget

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
RETENTION = timedelta(days=7)
OLD = NOW - RETENTION - timedelta(hours=1)
RECENT = NOW - RETENTION + timedelta(hours=1)


def tables() -> tuple[MetaData, Table, Table]:
    metadata = MetaData()
    return metadata, outbox_table(metadata), inbox_table(metadata)


def targets(outbox: Table, inbox: Table) -> list[PurgeTarget]:
    return [PurgeTarget(outbox, outbox.c.published_at), PurgeTarget(inbox, inbox.c.processed_at)]


def fill(engine: Engine, outbox: Table, inbox: Table, *, old_published: int = 3) -> None:
    """`old_published` old published outbox rows (`old-N`), one recent published, one old
    and one recent unpublished (published_at NULL whatever its age); inbox: old and recent."""
    rows = [
        {"id": f"old-{i}", "published_at": OLD - timedelta(seconds=i)} for i in range(old_published)
    ]
    rows += [
        {"id": "recent", "published_at": RECENT},
        {"id": "unsent-old", "published_at": None, "occurred_at": OLD.isoformat()},
        {"id": "unsent-new", "published_at": None},
    ]
    with engine.begin() as conn:
        for row in rows:
            conn.execute(
                outbox.insert().values(
                    type="t", occurred_at=row.pop("occurred_at", NOW.isoformat()), data={}, **row
                )
            )
        for consumer, mid, at in [("c", "in-old", OLD), ("c", "in-new", RECENT), ("d", "x", OLD)]:
            conn.execute(
                inbox.insert().values(
                    consumer=consumer, message_id=mid, event_type="t", processed_at=at
                )
            )


def ids(engine: Engine, table: Table, column: str) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(select(table.c[column])).scalars())
