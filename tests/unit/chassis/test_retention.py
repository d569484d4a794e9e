"""The retention purge (chassis.retention) on SQLite: only what is old goes, in bounded
batches; settings refuse a retention shorter than the Idempotency-Key window; row counts on
/metrics."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from sqlalchemy import Engine, event

from chassis import ConfigError, create_db_engine, from_env
from chassis.retention import Purger, RetentionSettings, retention_ctx
from tests.support.retention import NOW, RETENTION, fill, ids, tables, targets


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = create_db_engine(f"sqlite:///{tmp_path / 'r.db'}")
    yield engine
    engine.dispose()


def test_purge_removes_only_old_published_outbox_and_old_inbox_rows(engine: Engine) -> None:
    metadata, outbox, inbox = tables()
    metadata.create_all(engine)
    fill(engine, outbox, inbox)
    purger = Purger(engine, targets(outbox, inbox), retention=RETENTION, batch=100, pause=0)

    assert purger.purge(NOW) == {"outbox": 3, "inbox": 2}

    # unpublished rows stay whatever their age; recent published rows stay
    assert ids(engine, outbox, "id") == {"recent", "unsent-old", "unsent-new"}
    assert ids(engine, inbox, "message_id") == {"in-new"}
    assert purger.purge(NOW) == {"outbox": 0, "inbox": 0}


def test_batches_are_bounded(engine: Engine) -> None:
    metadata, outbox, inbox = tables()
    metadata.create_all(engine)
    fill(engine, outbox, inbox, old_published=23)
    batches: list[tuple[str, int]] = []
    deletes: list[int] = []

    def count_deletes(conn, cursor, statement, params, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("DELETE"):
            deletes.append(cursor.rowcount)

    event.listen(engine, "after_cursor_execute", count_deletes)
    purger = Purger(
        engine,
        targets(outbox, inbox),
        retention=RETENTION,
        batch=10,
        pause=0,
        on_batch=lambda table, n: batches.append((table, n)),
    )
    assert purger.purge(NOW)["outbox"] == 23
    assert batches == [("outbox", 10), ("outbox", 10), ("outbox", 3), ("inbox", 2)]
    assert max(deletes) <= 10  # no statement ever deleted more than one batch
    assert ids(engine, outbox, "id") == {"recent", "unsent-old", "unsent-new"}


@dataclass(frozen=True)
class _Svc(RetentionSettings):
    database_url: str = "sqlite://"


def test_settings_defaults_env_and_the_idempotency_window() -> None:
    s = from_env(_Svc, "SVC_", {})
    assert (s.retention_days, s.purge_batch, s.purge_interval) == (7.0, 500, 300.0)
    s = from_env(
        _Svc,
        "SVC_",
        {"SVC_RETENTION_DAYS": "2.5", "SVC_PURGE_BATCH": "50", "SVC_PURGE_INTERVAL": "0"},
    )
    assert s.retention == timedelta(days=2.5) and s.purge_batch == 50 and s.purge_interval == 0
    with pytest.raises(ConfigError) as err:
        from_env(
            _Svc,
            "SVC_",
            {"SVC_RETENTION_DAYS": "0.5", "SVC_PURGE_BATCH": "0", "SVC_PURGE_INTERVAL": "-1"},
        )
    message = str(err.value)
    assert "SVC_RETENTION_DAYS='0.5': must be at least 1" in message
    assert "Idempotency-Key window" in message
    assert "SVC_PURGE_BATCH='0'" in message and "SVC_PURGE_INTERVAL='-1'" in message


def test_row_counts_and_purged_rows_exported(engine: Engine) -> None:
    metadata, outbox, inbox = tables()
    metadata.create_all(engine)
    fill(engine, outbox, inbox)
    purger = Purger(engine, targets(outbox, inbox), retention=RETENTION, batch=100, pause=0)
    purger.purge(NOW)
    registry = CollectorRegistry()
    purger.register(registry, "svc")
    text = generate_latest(registry).decode()
    assert 'db_table_rows{service="svc",table="outbox"} 3.0' in text
    assert 'db_table_rows{service="svc",table="inbox"} 1.0' in text
    assert 'retention_purged_rows_total{service="svc",table="outbox"} 3.0' in text
    assert "retention_last_pass_timestamp_seconds" in text


def test_a_table_not_created_yet_is_left_out_of_the_counts(engine: Engine) -> None:
    _, outbox, inbox = tables()
    purger = Purger(engine, targets(outbox, inbox), retention=RETENTION, batch=10)
    assert purger.row_counts() == {}


async def test_aiohttp_cleanup_ctx_runs_passes_and_stops(engine: Engine) -> None:
    metadata, outbox, inbox = tables()
    metadata.create_all(engine)
    fill(engine, outbox, inbox)
    passes = asyncio.Event()
    # retention of 0 for this test: everything published or processed is old
    purger = Purger(engine, targets(outbox, inbox), retention=timedelta(0), batch=100, pause=0)
    purger._first_wait = lambda interval: 0  # type: ignore[method-assign]
    purger.on_batch = lambda table, n: passes.set()
    ctx = retention_ctx(purger, 0.01)(None)
    await ctx.__anext__()
    await asyncio.wait_for(passes.wait(), 5)
    with pytest.raises(StopAsyncIteration):
        await ctx.__anext__()
    assert ids(engine, inbox, "message_id") == set()


def test_thread_start_is_off_with_interval_zero(engine: Engine) -> None:
    _, outbox, inbox = tables()
    purger = Purger(engine, targets(outbox, inbox), retention=RETENTION, batch=10)
    purger.start(0)
    assert purger._thread is None
    purger.stop()
