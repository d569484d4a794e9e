"""Alembic migrations on PostgreSQL (ADR 0019): every service from empty to head and back,
no drift, a failing revision rolled back whole, and two concurrent runners applying once."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from chassis import migrations
from chassis.db import create_db_engine
from tests.support.migrations import SERVICES, failing_revision, service_schema
from tests.support.waiting import wait_until

pytestmark = pytest.mark.postgres


@pytest.mark.parametrize("name", SERVICES)
def test_upgrade_diff_and_downgrade(name: str, postgres_url: str) -> None:
    metadata, folder = service_schema(name)
    assert migrations.upgrade(metadata, folder, postgres_url)[-1] == migrations.head(folder)
    assert migrations.diff(metadata, postgres_url) == []
    migrations.downgrade(metadata, folder, postgres_url, "base")
    engine = create_db_engine(postgres_url)
    assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    engine.dispose()


def test_a_failing_revision_is_rolled_back_whole(postgres_url: str, tmp_path: Path) -> None:
    metadata, folder = service_schema("payments")
    broken = failing_revision(folder, tmp_path, migrations.head(folder))
    with pytest.raises(migrations.MigrationError, match="9999_broken"):
        migrations.upgrade(metadata, broken, postgres_url)
    assert migrations.current(postgres_url) == migrations.head(folder)
    engine = create_db_engine(postgres_url)
    assert "half_done" not in inspect(engine).get_table_names()
    engine.dispose()


def test_two_concurrent_runners_apply_each_revision_once(postgres_url: str) -> None:
    """The advisory lock makes the second runner wait, then find the database at head. We hold
    the lock first so both runners are certainly waiting on it at the same time."""
    metadata, folder = service_schema("notifications")
    results: dict[int, list[str]] = {}
    errors: list[BaseException] = []
    holder = create_db_engine(postgres_url)
    key = migrations._lock_key(folder)
    with holder.connect() as conn:
        conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": key})

        def run(i: int) -> None:
            try:
                results[i] = migrations.upgrade(metadata, folder, postgres_url)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        waiting = "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
        wait_until(
            lambda: conn.execute(text(waiting)).scalar_one() == 2,
            10,
            "both runners to queue behind our lock",
        )
        conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": key})
        conn.commit()
    for t in threads:
        t.join(timeout=60)
    holder.dispose()
    assert not errors
    # one applied every revision (0001-0003), the other none
    assert sorted(len(r) for r in results.values()) == [0, 3]
    assert migrations.current(postgres_url) == migrations.head(folder)
