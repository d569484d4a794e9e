"""The chassis.db helpers the messaging threads need beside asyncio services."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text

from chassis import create_async_db_engine, create_db_engine, sync_url


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
