"""A throwaway event log (and outbox) for `chassis.eventstore` tests on SQLite and PostgreSQL,
and the two-writers race both dialects must win the same way."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import AsyncEngine

from chassis.eventstore import ConcurrencyConflict, EventStore, NewEvent, Upcasters, event_log_table
from chassis.messaging import outbox_table

metadata = MetaData()
LOG = event_log_table(metadata, "test_events")
OUTBOX = outbox_table(metadata)


async def create(engine: AsyncEngine) -> None:
    async with engine.begin() as conn:
        await conn.run_sync(metadata.create_all)


def event(kind: str = "thing.happened", **data: object) -> NewEvent:
    return NewEvent(kind, dict(data), datetime.now(UTC))


async def race_two_writers(engine: AsyncEngine, store: EventStore | None = None) -> list[str]:
    """Two transactions read the stream at version 1 and both append version 2 at once;
    returns how each ended ("appended" or "conflict"), the log keeping one version 2."""
    store = store or EventStore(LOG, OUTBOX, Upcasters())
    async with engine.begin() as conn:
        await store.append(conn, "s-1", 0, [event(n=1)])
    both_read = asyncio.Barrier(2)

    async def writer(n: int) -> str:
        async with engine.connect() as conn:
            await conn.begin()
            assert [e.version for e in await store.load(conn, "s-1")] == [1]
            await both_read.wait()
            try:
                await store.append(conn, "s-1", 1, [event(n=n)])
                await conn.commit()
                return "appended"
            except ConcurrencyConflict:
                await conn.rollback()
                return "conflict"

    return sorted(await asyncio.gather(writer(2), writer(3)))
