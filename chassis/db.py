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

Reads outside a transaction (`reader`, `read_connection`): a read's unit of work is a function of
a blocking `Connection`, run where it costs the fewest trips. SQLAlchemy wraps every statement
in a transaction, which costs a single-statement read two more round trips on PostgreSQL
(BEGIN, ROLLBACK), and aiosqlite runs every DBAPI call as a hop to the connection's thread
(cursor, execute, fetch, close, rollback: five wake-ups for one SELECT). So:

* PostgreSQL: the engine's pool, checked out in AUTOCOMMIT (no BEGIN, nothing to roll back;
  asyncpg and psycopg switch it on the client, no round trip). Each statement sees the
  committed data of its own moment, which is all a single-statement read needs.
* SQLite file (async engine): the whole function runs in one hop, on a small thread pool with
  a blocking pysqlite engine on the same file (WAL: readers do not wait for the writer). The
  caller's context variables (trace, correlation id) go along.
* Anything else (in-memory SQLite): the engine itself, as before.
"""

from __future__ import annotations

import asyncio
import contextvars
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, create_engine, event, exc, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from . import tracing

__all__ = [
    "Reader",
    "create_async_db_engine",
    "create_db_engine",
    "ping",
    "read_connection",
    "reader",
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


T = TypeVar("T")

# threads (and pooled pysqlite connections) a Reader gives an async SQLite engine's reads
READ_THREADS = 4


def _file_sqlite(engine: Engine | AsyncEngine) -> bool:
    url = engine.url
    if url.get_backend_name() != "sqlite" or not url.database or url.database == ":memory:":
        return False
    return "mode=memory" not in url.render_as_string() and not url.database.startswith("file:")


def read_connection(engine: Engine) -> Connection:
    """A connection of `engine` for single-statement reads (`with read_connection(e) as c:`):
    in AUTOCOMMIT on PostgreSQL (no BEGIN and ROLLBACK around the SELECT), set on this
    connection only (an engine derived with `execution_options` would switch on SQLAlchemy's
    event dispatch for every statement of it). pysqlite sends no BEGIN before a SELECT
    anyway, and switching its isolation level back costs a PRAGMA: other databases get a
    plain connection. The pool resets the level when the connection goes back."""
    conn = engine.connect()
    if engine.dialect.name == "postgresql":
        conn.execution_options(isolation_level="AUTOCOMMIT")
    return conn


class Reader:
    """Runs a read (a function of a blocking `Connection`) for an `AsyncEngine`, outside a
    transaction and at the fewest hops the driver allows (see the module's docstring).

    `await reader(fn, *args)` returns `fn(conn, *args)`. The function must only read: on
    PostgreSQL each statement commits on its own. Resources (threads, the pysqlite engine)
    are made on first use and let go when the async engine is disposed.
    """

    def __init__(self, engine: AsyncEngine, *, threads: int = READ_THREADS) -> None:
        self.engine = engine
        self.threads = threads
        self._threaded = _file_sqlite(engine)
        self._autocommit = engine.url.get_backend_name() == "postgresql"
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._blocking_engine: Engine | None = None

    async def __call__(self, fn: Callable[..., T], *args: Any) -> T:
        if not self._threaded:
            async with self.engine.connect() as conn:
                return await conn.run_sync(self._run_direct, fn, args)
        executor = self._executor or self._start()
        context = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(
            executor, context.run, self._run_blocking, fn, args
        )

    def _start(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._blocking_engine = create_db_engine(sync_url(self.engine.url))
                self._executor = ThreadPoolExecutor(self.threads, "portico-read")
            return self._executor

    def _run_direct(self, conn: Connection, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        if self._autocommit:  # on this connection only: no event dispatch on the engine
            conn.execution_options(isolation_level="AUTOCOMMIT")
        return fn(conn, *args)

    def _run_blocking(self, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
        engine = self._blocking_engine
        assert engine is not None
        with engine.connect() as conn:
            return fn(conn, *args)

    def dispose(self) -> None:
        """Let go of the threads and the pysqlite connections (made again if used again)."""
        with self._lock:
            executor, self._executor = self._executor, None
            engine, self._blocking_engine = self._blocking_engine, None
        if executor is not None:
            executor.shutdown(wait=False)
        if engine is not None:
            engine.dispose()


def reader(engine: AsyncEngine) -> Reader:
    """The engine's `Reader` (one per engine, kept on it), disposed with the engine."""
    sync = engine.sync_engine
    found: Reader | None = sync.__dict__.get("portico_reader")
    if found is None:
        found = sync.__dict__["portico_reader"] = Reader(engine)
        event.listen(sync, "engine_disposed", _dispose_reader)
    return found


def _dispose_reader(engine: Engine) -> None:
    found: Reader | None = engine.__dict__.get("portico_reader")
    if found is not None:
        found.dispose()
