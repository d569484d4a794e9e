"""chassis.db.reader: a read's unit of work outside a transaction, in one hop (issue 17)."""

from __future__ import annotations

import contextvars
import threading
from pathlib import Path

import pytest
from sqlalchemy import Column, Connection, Integer, MetaData, String, Table, insert, select

from chassis.db import create_async_db_engine, create_db_engine, read_connection, reader

meta = MetaData()
things = Table("things", meta, Column("id", Integer, primary_key=True), Column("name", String))
where: contextvars.ContextVar[str] = contextvars.ContextVar("where", default="unset")


def names(conn: Connection, *, seen: dict[str, object] | None = None) -> list[str]:
    if seen is not None:
        seen["thread"] = threading.get_ident()
        seen["context"] = where.get()
    return [r.name for r in conn.execute(select(things.c.name).order_by(things.c.id))]


async def test_a_sqlite_file_read_runs_in_one_hop_on_a_reader_thread(tmp_path: Path) -> None:
    engine = create_async_db_engine(f"sqlite+aiosqlite:///{tmp_path / 'r.db'}")
    async with engine.begin() as conn:
        await conn.run_sync(meta.create_all)
        await conn.execute(insert(things), [{"name": "a"}, {"name": "b"}])
    read = reader(engine)
    assert reader(engine) is read  # one per engine
    where.set("request-1")
    seen: dict[str, object] = {}
    assert await read(lambda c: names(c, seen=seen)) == ["a", "b"]
    assert seen["thread"] != threading.get_ident()  # off the event loop
    assert seen["context"] == "request-1"  # the caller's context went along

    async with engine.connect() as conn:  # a write in a transaction, never committed
        await conn.execute(insert(things).values(name="c"))
        assert await conn.run_sync(names) == ["a", "b", "c"]
        await conn.rollback()
    assert await read(names) == ["a", "b"]
    async with engine.begin() as conn:  # and one committed: the next read sees it
        await conn.execute(insert(things).values(name="d"))
    assert await read(names) == ["a", "b", "d"]

    await engine.dispose()  # lets go of the threads and connections ...
    assert read._executor is None and read._blocking_engine is None
    assert await read(names) == ["a", "b", "d"]  # ... made again when used again
    await engine.dispose()


async def test_an_in_memory_database_is_read_through_the_engine_itself() -> None:
    engine = create_async_db_engine("sqlite+aiosqlite://")
    async with engine.begin() as conn:
        await conn.run_sync(meta.create_all)
        await conn.execute(insert(things).values(name="x"))
    assert await reader(engine)(names) == ["x"]
    assert reader(engine)._executor is None
    await engine.dispose()


def test_a_sqlite_read_connection_is_a_plain_one(tmp_path: Path) -> None:
    engine = create_db_engine(f"sqlite:///{tmp_path / 's.db'}")
    with read_connection(engine) as conn:
        assert conn.get_isolation_level() == "SERIALIZABLE"  # pysqlite's default, untouched
        assert conn.connection.dbapi_connection.isolation_level == ""  # type: ignore[union-attr]
    engine.dispose()


@pytest.mark.parametrize("url", ["sqlite+aiosqlite:///{tmp}/p.db"])
async def test_a_failing_read_raises_to_the_caller(tmp_path: Path, url: str) -> None:
    engine = create_async_db_engine(url.format(tmp=tmp_path))
    with pytest.raises(Exception, match="no such table"):
        await reader(engine)(names)
    await engine.dispose()
