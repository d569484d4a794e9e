"""chassis.db on PostgreSQL: reads in AUTOCOMMIT (no BEGIN/ROLLBACK round trips), writes
still in a transaction on the same pool (issue 17)."""

from __future__ import annotations

import pytest
from sqlalchemy import Connection, text

from chassis.db import create_async_db_engine, create_db_engine, read_connection, reader

pytestmark = pytest.mark.postgres


def state(conn: Connection) -> tuple[bool, list[int]]:
    rows = [r[0] for r in conn.execute(text("SELECT n FROM things ORDER BY n"))]
    return bool(conn.connection.dbapi_connection.autocommit), rows  # type: ignore[union-attr]


async def test_async_reads_autocommit_and_writes_stay_transactional(postgres_url: str) -> None:
    url = postgres_url.replace("postgresql+psycopg://", "postgresql+asyncpg://", 1)
    engine = create_async_db_engine(url)
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE things (n integer)"))
        await conn.execute(text("INSERT INTO things VALUES (1)"))
    read = reader(engine)
    assert await read(state) == (True, [1])
    async with engine.connect() as conn:  # the same pooled connection, back to transactions
        await conn.execute(text("INSERT INTO things VALUES (2)"))
        assert await conn.run_sync(state) == (False, [1, 2])
        await conn.rollback()
    assert await read(state) == (True, [1])
    await engine.dispose()


def test_blocking_reads_autocommit_and_writes_stay_transactional(postgres_url: str) -> None:
    engine = create_db_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE things (n integer)"))
        conn.execute(text("INSERT INTO things VALUES (1)"))
    with read_connection(engine) as conn:
        assert state(conn) == (True, [1])
    with engine.connect() as conn:
        conn.execute(text("INSERT INTO things VALUES (2)"))
        assert state(conn) == (False, [1, 2])
        conn.rollback()
    with read_connection(engine) as conn:
        assert state(conn) == (True, [1])
    assert not engine._has_events  # nothing dispatched per statement for it
    engine.dispose()
