"""The chassis.db helpers the messaging threads need beside asyncio services."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import MetaData, select, text

from chassis import create_async_db_engine, create_db_engine, sync_url
from chassis.messaging import Event, OutboxWriter, outbox_table


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite+aiosqlite:///var/orders/orders.db", "sqlite:///var/orders/orders.db"),
        ("postgresql+asyncpg://u:secret@h:5432/db", "postgresql+psycopg://u:secret@h:5432/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("sqlite:///x.db", "sqlite:///x.db"),
    ],
)
def test_sync_url(url: str, expected: str) -> None:
    assert sync_url(url) == expected


async def test_async_engine_shares_the_sqlite_file_in_wal(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'sub' / 'svc.db'}"
    engine = create_async_db_engine(url)
    try:
        async with engine.begin() as conn:
            assert (await conn.execute(text("PRAGMA journal_mode"))).scalar_one() == "wal"
            await conn.execute(text("CREATE TABLE t (x INTEGER)"))
            await conn.execute(text("INSERT INTO t VALUES (1)"))
    finally:
        await engine.dispose()
    blocking = create_db_engine(sync_url(url))
    with blocking.connect() as conn:
        assert conn.execute(text("SELECT x FROM t")).scalar_one() == 1
    blocking.dispose()
    plain = create_async_db_engine(f"sqlite:///{tmp_path / 'p.db'}")
    assert plain.url.drivername == "sqlite+aiosqlite"
    await plain.dispose()


async def test_outbox_writer_writes_on_sync_and_async_connections(tmp_path: Path) -> None:
    """The one event writer: rows on the caller's connection (sync or async), the same row
    shape either way, and `committed()` wakes the relay only once one is attached."""
    metadata = MetaData()
    table = outbox_table(metadata)
    woken: list[bool] = []
    writer = OutboxWriter(table)
    writer.committed()  # no relay yet: nothing to wake, no error
    url = f"sqlite+aiosqlite:///{tmp_path / 'outbox.db'}"
    blocking = create_db_engine(sync_url(url))
    metadata.create_all(blocking)
    with blocking.begin() as conn:
        writer.write(conn, [Event(type="a.happened", data={"n": 1})])
    engine = create_async_db_engine(url)
    try:
        async with engine.begin() as aconn:
            await writer.write_async(aconn, [Event(type="b.happened", data={"n": 2})])
    finally:
        await engine.dispose()
    writer.wake = lambda: woken.append(True)
    writer.committed()
    with blocking.connect() as conn:
        rows = conn.execute(select(table.c.type, table.c.data).order_by(table.c.seq)).all()
    blocking.dispose()
    assert [tuple(r) for r in rows] == [("a.happened", {"n": 1}), ("b.happened", {"n": 2})]
    assert woken == [True]
