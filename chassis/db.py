"""SQLAlchemy engines with the settings every service wants.

SQLite (the embedded default) gets WAL, a busy timeout and foreign keys so that several
gunicorn workers can share one file.

Pools are sized for the worker model (issue 17):

* A blocking engine serves one gunicorn worker, whose threads (1 for `sync`, a few for
  `gthread`) each hold at most one connection: 5 kept, 10 more on a burst.
* An async engine serves one event loop answering many requests at once. Its pool keeps as
  many connections as may query at once (`PORTICO_DB_POOL_SIZE`, default 20) and opens no
  overflow: an overflow connection is closed again at checkin, so under load every request
  beyond the pool would pay a new connection (for aiosqlite a new thread and the pragmas,
  for asyncpg a new session). Requests beyond the pool wait for a connection instead.

A pooled connection is pinged before use only when it sat idle for `IDLE_PING_AFTER` seconds
(`pool_pre_ping` pinged on every checkout: one more round trip per request). A connection
that dies while in use still invalidates the pool (SQLAlchemy's disconnect handling), so a
database restart costs the requests that were in flight, as with `pool_pre_ping`.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event, exc, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from . import tracing

__all__ = [
    "create_async_db_engine",
    "create_db_engine",
    "ping",
    "sqlite_url",
    "sync_url",
]

# Async drivers and the blocking driver that reaches the same database.
_SYNC_DRIVERS = {
    "sqlite+aiosqlite": "sqlite",
    "postgresql+asyncpg": "postgresql+psycopg",
    "postgresql+psycopg_async": "postgresql+psycopg",
}


# seconds a pooled connection may sit unused before its next checkout pings it first
IDLE_PING_AFTER = 10.0
SYNC_POOL = {"pool_size": 5, "max_overflow": 10}


def async_pool_size() -> int:
    """Connections an async engine keeps (`PORTICO_DB_POOL_SIZE`, default 20)."""
    raw = os.environ.get("PORTICO_DB_POOL_SIZE", "20")
    try:
        size = int(raw)
    except ValueError:
        size = 0
    if size < 1:
        raise ValueError(f"PORTICO_DB_POOL_SIZE must be a positive integer, not {raw!r}")
    return size


def ping_when_idle(engine: Engine, after: float = IDLE_PING_AFTER) -> None:
    """Ping a pooled connection at checkout only if it was idle for `after` seconds; a failed
    ping makes the pool drop it and check out another (`DisconnectionError`)."""

    @event.listens_for(engine, "checkin")
    def _checkin(_dbapi_conn: Any, record: Any) -> None:
        record.info["portico_idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _checkout(dbapi_conn: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("portico_idle_since")
        if since is None or time.monotonic() - since < after:
            return
        try:
            alive = engine.dialect.do_ping(dbapi_conn)
        except Exception as error:
            raise exc.DisconnectionError("the pooled connection did not answer") from error
        if alive is False:
            raise exc.DisconnectionError("the pooled connection did not answer")


def sqlite_url(path: str | Path) -> str:
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{p}"


def create_db_engine(url: str, *, echo: bool = False) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, echo=echo, connect_args={"timeout": 30})

        event.listen(engine, "connect", _sqlite_pragmas)
        tracing.instrument_engine(engine)  # no-op unless PORTICO_TRACING is set
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    engine = create_engine(parsed, echo=echo, **SYNC_POOL)
    ping_when_idle(engine)
    tracing.instrument_engine(engine)
    return engine


def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA busy_timeout=30000")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def sync_url(url: str | URL) -> str:
    """The blocking-driver URL of the same database, for threads beside an asyncio service.

    The outbox relay and event consumers run in threads with a normal `Engine`; this maps
    `+aiosqlite` to pysqlite and `+asyncpg` to psycopg 3, leaving blocking URLs untouched.
    """
    parsed = make_url(url)
    driver = _SYNC_DRIVERS.get(parsed.drivername)
    if driver:
        parsed = parsed.set(drivername=driver)
    return parsed.render_as_string(hide_password=False)


def create_async_db_engine(url: str, *, echo: bool = False) -> AsyncEngine:
    """An `AsyncEngine` with the same SQLite pragmas / PostgreSQL pooling as `create_db_engine`.

    Plain `sqlite:///` becomes aiosqlite and plain `postgresql://` becomes asyncpg;
    `postgresql+psycopg://` stays psycopg 3, which is async-capable too.
    """
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.drivername == "sqlite":
            parsed = parsed.set(drivername="sqlite+aiosqlite")
        pool: dict[str, int] = {}
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
            pool = {"pool_size": async_pool_size(), "max_overflow": 0}  # else one static one
        engine = create_async_engine(parsed, echo=echo, connect_args={"timeout": 30}, **pool)
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        tracing.instrument_engine(engine)  # no-op unless PORTICO_TRACING is set
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+asyncpg")
    async_engine = create_async_engine(
        parsed, echo=echo, pool_size=async_pool_size(), max_overflow=0
    )
    ping_when_idle(async_engine.sync_engine)
    tracing.instrument_engine(async_engine)
    return async_engine


def ping(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
