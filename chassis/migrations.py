"""Schema migrations (Alembic) run the same way by every service (ADR 0019).

Each service keeps its revisions in `services/<name>/migrations/versions/`, next to a two-line
`env.py` that calls `run_env()`. Nothing reads an `alembic.ini`: the runner builds the Alembic
`Config` in code from the service's metadata, its migrations folder and its database URL.

- Every revision runs in its own transaction (PostgreSQL's transactional DDL; on SQLite the
  driver is made to emit a real BEGIN), so a revision that fails leaves the database at the
  revision before it and `MigrationError` names the one that failed.
- On PostgreSQL a session advisory lock keyed on the migrations folder serialises concurrent
  runners (two pods starting at once): the second waits, then finds the database at head.
- SQLite gets `render_as_batch`, so an ALTER that SQLite lacks is done by copying the table.
- Services never migrate as they start: each serving path calls `require_head` first, which
  refuses (`SchemaNotAtHead`, naming both revisions) a database not at the release's head.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, MetaData, event, inspect, text

from .db import create_db_engine, sync_url

__all__ = [
    "MigrationError",
    "PreBaselineError",
    "SchemaNotAtHead",
    "current",
    "diff",
    "downgrade",
    "head",
    "require_head",
    "revision",
    "run_env",
    "upgrade",
]


class MigrationError(RuntimeError):
    """A revision failed; the database is left at `previous` (None: empty)."""

    def __init__(self, revision: str, previous: str | None, cause: BaseException) -> None:
        super().__init__(
            f"migration {revision} failed ({type(cause).__name__}: {cause}); "
            f"the database stays at revision {previous or 'base (empty)'}"
        )
        self.revision = revision
        self.previous = previous


def _engine(url: str) -> Engine:
    """A short-lived blocking engine; on SQLite, one whose transactions are real (BEGIN)."""
    engine = create_db_engine(sync_url(url))
    if engine.dialect.name == "sqlite":
        # pysqlite opens transactions only before DML, so DDL would autocommit statement by
        # statement; take the transaction over (SQLAlchemy's documented pysqlite recipe).
        @event.listens_for(engine, "connect")
        def _no_implicit(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def _config(migrations_dir: str | Path, metadata: MetaData, connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(migrations_dir))
    config.attributes["target_metadata"] = metadata
    config.attributes["connection"] = connection
    return config


def run_env() -> None:
    """The body of every service's `migrations/env.py` (online mode only)."""
    from alembic import context

    config = context.config
    connection: Connection = config.attributes["connection"]
    context.configure(
        connection=connection,
        target_metadata=config.attributes["target_metadata"],
        render_as_batch=connection.dialect.name == "sqlite",
        transactional_ddl=True,  # with the BEGIN above, SQLite too
        transaction_per_migration=True,
        compare_type=True,
        on_version_apply=config.attributes.get("on_version_apply"),
    )
    with context.begin_transaction():
        context.run_migrations()


def _lock_key(migrations_dir: str | Path) -> int:
    """A stable signed 64-bit advisory-lock key per service (its migrations folder's name)."""
    name = Path(migrations_dir).resolve().parent.name
    digest = hashlib.sha256(f"portico-migrate:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextmanager
def _locked(engine: Engine, migrations_dir: str | Path) -> Iterator[None]:
    """Hold PostgreSQL's session advisory lock for the run (no-op elsewhere).

    A session lock, not a transaction one: each revision commits on its own, and the lock is
    held on a separate connection across all of them.
    """
    if engine.dialect.name != "postgresql":
        yield
        return
    key = _lock_key(migrations_dir)
    with engine.connect() as lock_conn:
        lock_conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})
        lock_conn.commit()
        try:
            yield
        finally:
            lock_conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
            lock_conn.commit()


def _current(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def _has_tables(conn: Connection, metadata: MetaData) -> bool:
    return bool(set(inspect(conn).get_table_names()) & set(metadata.tables))


class PreBaselineError(MigrationError):
    """A database made before migrations that lacks part of the baseline: not adopted."""

    def __init__(self, base: str, missing: list[str]) -> None:
        RuntimeError.__init__(
            self,
            "this database predates migrations and lacks part of the baseline revision "
            f"{base}: {', '.join(missing)}. Run `init` of the last release before ADR 0019 "
            "once (it adds them), then migrate",
        )
        self.revision = base
        self.previous = None
        self.missing = missing


def _baseline_columns(metadata: MetaData, migrations_dir: str | Path, base: str) -> set[str]:
    """`table.column` for every column the baseline revision creates (run on scratch SQLite)."""
    with tempfile.TemporaryDirectory() as scratch:
        engine = _engine(f"sqlite:///{Path(scratch) / 'baseline.db'}")
        try:
            with engine.connect() as conn:
                command.upgrade(_config(migrations_dir, metadata, conn), base)
                found = inspect(conn)
                return {
                    f"{table}.{column['name']}"
                    for table in found.get_table_names()
                    if table != "alembic_version"
                    for column in found.get_columns(table)
                }
        finally:
            engine.dispose()


def _adopt(
    conn: Connection, metadata: MetaData, migrations_dir: str | Path, script: ScriptDirectory
) -> str:
    """Stamp the baseline on a database whose tables predate migrations; returns it.

    Only a database that holds the whole baseline is adopted. One from an older release still
    lacking a column the pre-migration `init` used to add (e.g. `payments.owner`) is refused,
    naming the columns: run that release's `init` once (or add them by hand), then migrate.
    """
    base = script.get_base()
    assert base is not None
    found = inspect(conn)
    have = {
        f"{table}.{column['name']}"
        for table in found.get_table_names()
        for column in found.get_columns(table)
    }
    missing = sorted(_baseline_columns(metadata, migrations_dir, base) - have)
    if missing:
        raise PreBaselineError(base, missing)
    command.stamp(_config(migrations_dir, metadata, conn), base)
    return base


def current(url: str) -> str | None:
    """The database's revision (None: no migration applied)."""
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            return _current(conn)
    finally:
        engine.dispose()


def head(migrations_dir: str | Path) -> str:
    """The newest revision in the folder."""
    revision = ScriptDirectory(str(migrations_dir)).get_current_head()
    assert revision is not None, f"no revisions in {migrations_dir}"
    return revision


class SchemaNotAtHead(MigrationError):
    """The database is not at the head of the service's migrations: the service won't start."""

    def __init__(self, service: str, found: str | None, expected: str) -> None:
        RuntimeError.__init__(
            self,
            f"{service} will not start: its database is at revision {found or 'base (empty)'}, "
            f"this release needs {expected}; run `python -m services.{service} migrate` first",
        )
        self.revision = expected
        self.previous = found
        self.service = service


def require_head(service: str, migrations_dir: str | Path, url: str) -> None:
    """Refuse to serve on a database that is behind (or ahead of) this release's migrations.

    Every service's serving path calls this before building its app; migrating stays a step
    of its own (`migrate`, the init container), so two replicas starting never race on DDL.
    """
    found, expected = current(url), head(migrations_dir)
    if found != expected:
        raise SchemaNotAtHead(service, found, expected)


def upgrade(
    metadata: MetaData, migrations_dir: str | Path, url: str, revision: str = "head"
) -> list[str]:
    """Bring the database to `revision`; returns the revisions applied (oldest first).

    Raises `MigrationError` naming the revision that failed; the ones before it stay applied.
    """
    script = ScriptDirectory(str(migrations_dir))
    engine = _engine(url)
    applied: list[str] = []
    try:
        with _locked(engine, migrations_dir), engine.connect() as conn:
            start = _current(conn)
            if start is None and _has_tables(conn, metadata):
                # A database `init` made before Alembic (ADR 0003): it holds the baseline.
                start = _adopt(conn, metadata, migrations_dir, script)
            conn.commit()
            pending = [
                r.revision
                for r in reversed(list(script.iterate_revisions(revision, start)))
                if r.revision != start
            ]
            config = _config(migrations_dir, metadata, conn)
            config.attributes["on_version_apply"] = lambda **kw: applied.extend(
                kw["step"].up_revision_ids
            )
            try:
                command.upgrade(config, revision)
            except Exception as exc:
                failed = pending[len(applied)] if len(applied) < len(pending) else revision
                raise MigrationError(failed, applied[-1] if applied else start, exc) from exc
    finally:
        engine.dispose()
    return applied


def downgrade(metadata: MetaData, migrations_dir: str | Path, url: str, revision: str) -> None:
    """Take the database back to `revision` ("base": no tables)."""
    engine = _engine(url)
    try:
        with _locked(engine, migrations_dir), engine.connect() as conn:
            command.downgrade(_config(migrations_dir, metadata, conn), revision)
    finally:
        engine.dispose()


def diff(metadata: MetaData, url: str) -> list[Any]:
    """What autogenerate would change to make the database match `metadata` (empty: none)."""
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "target_metadata": metadata}
            )
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def revision(
    metadata: MetaData, migrations_dir: str | Path, url: str, message: str, rev_id: str
) -> None:
    """Write a new revision autogenerated from `metadata` against the database at `url`
    (which should be at head). A developer's tool: review the file before committing it."""
    engine = _engine(url)
    try:
        with engine.connect() as conn:
            config = _config(migrations_dir, metadata, conn)
            command.revision(config, message=message, autogenerate=True, rev_id=rev_id)
    finally:
        engine.dispose()
