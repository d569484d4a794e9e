"""The retention purge on a real PostgreSQL database: only old rows go, in bounded batches,
and the advisory lock lets one process purge at a time."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, text

from chassis import create_db_engine
from chassis.retention import Purger
from tests.support.retention import NOW, RETENTION, fill, ids, tables, targets

pytestmark = pytest.mark.postgres


@pytest.fixture
def engine(postgres_url: str) -> Iterator[Engine]:
    engine = create_db_engine(postgres_url)
    yield engine
    engine.dispose()


def test_purge_in_batches_keeps_what_is_recent_or_unpublished(engine: Engine) -> None:
    metadata, outbox, inbox = tables()
    metadata.create_all(engine)
    fill(engine, outbox, inbox, old_published=12)
    batches: list[tuple[str, int]] = []
    purger = Purger(
        engine,
        targets(outbox, inbox),
        retention=RETENTION,
        batch=5,
        pause=0,
        on_batch=lambda table, n: batches.append((table, n)),
    )
    assert purger.purge(NOW) == {"outbox": 12, "inbox": 2}
    assert batches == [("outbox", 5), ("outbox", 5), ("outbox", 2), ("inbox", 2)]
    assert ids(engine, outbox, "id") == {"recent", "unsent-old", "unsent-new"}
    assert ids(engine, inbox, "message_id") == {"in-new"}
    assert purger.row_counts() == {"outbox": 3, "inbox": 1}


def test_a_second_process_skips_the_pass_while_one_holds_it(engine: Engine) -> None:
    metadata, outbox, inbox = tables()
    metadata.create_all(engine)
    fill(engine, outbox, inbox)
    first = Purger(engine, targets(outbox, inbox), retention=RETENTION, batch=10, pause=0)
    other_engine = create_db_engine(engine.url.render_as_string(hide_password=False))
    try:
        second = Purger(other_engine, targets(outbox, inbox), retention=RETENTION, batch=10)
        with first._guard() as mine:
            assert mine
            assert second.purge(NOW) == {}  # held elsewhere: skipped, not waited for
        assert second.purge(NOW) == {"outbox": 3, "inbox": 2}
        with engine.connect() as conn:  # the lock was released
            held = conn.execute(
                text(
                    "SELECT count(*) FROM pg_locks JOIN pg_database d ON d.oid = database"
                    " WHERE locktype = 'advisory' AND d.datname = current_database()"
                )
            )
            assert held.scalar_one() == 0
    finally:
        other_engine.dispose()
