"""SQLAlchemy engines with the settings every service wants.

SQLite (the embedded default) gets WAL, a busy timeout and foreign keys so that several
gunicorn workers can share one file; PostgreSQL gets a pre-pinged pool.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event, text
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
    engine = create_engine(parsed, echo=echo, pool_pre_ping=True, pool_size=5, max_overflow=10)
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
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_async_engine(parsed, echo=echo, connect_args={"timeout": 30})
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        tracing.instrument_engine(engine)  # no-op unless PORTICO_TRACING is set
        return engine
    if parsed.get_backend_name() == "postgresql" and parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+asyncpg")
    async_engine = create_async_engine(
        parsed, echo=echo, pool_pre_ping=True, pool_size=5, max_overflow=10
    )
    tracing.instrument_engine(async_engine)
    return async_engine


def ping(engine: Engine) -> None:
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))
