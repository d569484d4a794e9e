"""Alembic migrations on SQLite for every service (ADR 0019): upgrade from empty, downgrade to
base, no drift between models and migrations, a revision on a database holding rows, and a
failing revision that leaves the previous one in place."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, func, insert, inspect, select

from chassis import migrations
from tests.support.migrations import SERVICES, failing_revision, service_schema


def _url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'service.db'}"


@pytest.mark.parametrize("name", SERVICES)
def test_upgrade_from_empty_then_downgrade_to_base(name: str, tmp_path: Path) -> None:
    metadata, folder = service_schema(name)
    url = _url(tmp_path)
    applied = migrations.upgrade(metadata, folder, url)
    assert applied[0] == "0001" and applied[-1] == migrations.head(folder)
    assert migrations.current(url) == migrations.head(folder)
    tables = set(inspect(create_engine(url)).get_table_names())
    assert set(metadata.tables) <= tables
    assert migrations.upgrade(metadata, folder, url) == []  # at head: nothing to do

    migrations.downgrade(metadata, folder, url, "base")
    assert migrations.current(url) is None
    assert set(inspect(create_engine(url)).get_table_names()) <= {"alembic_version"}


@pytest.mark.parametrize("name", SERVICES)
def test_autogenerate_finds_no_difference_from_the_models(name: str, tmp_path: Path) -> None:
    metadata, folder = service_schema(name)
    url = _url(tmp_path)
    migrations.upgrade(metadata, folder, url)
    assert migrations.diff(metadata, url) == []


def test_the_inbox_index_revision_keeps_the_rows_it_finds(tmp_path: Path) -> None:
    """notifications 0002 (an index for retention's age-batched deletes) on a database at
    0001 that already holds inbox rows."""
    metadata, folder = service_schema("notifications")
    url = _url(tmp_path)
    migrations.upgrade(metadata, folder, url, "0001")
    engine = create_engine(url)
    inbox = metadata.tables["inbox"]
    rows = [
        {
            "consumer": "c",
            "message_id": f"m{i}",
            "event_type": "order.placed",
            "processed_at": datetime(2026, 1, 1, tzinfo=UTC),
        }
        for i in range(5)
    ]
    with engine.begin() as conn:
        conn.execute(insert(inbox), rows)

    assert migrations.upgrade(metadata, folder, url, "0002") == ["0002"]
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(inbox)).scalar_one() == 5
    assert "ix_inbox_processed_at" in {i["name"] for i in inspect(engine).get_indexes("inbox")}
    engine.dispose()


def test_a_database_made_by_create_all_is_adopted_at_the_baseline(tmp_path: Path) -> None:
    """A database `init` created before Alembic is stamped at 0001, keeps its rows, and is
    brought to head."""
    metadata, folder = service_schema("payments")
    url = _url(tmp_path)
    engine = create_engine(url)
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(
            metadata.tables["outbox"].insert(),
            {"id": "e1", "type": "t", "occurred_at": "2026", "data": {}},
        )
    assert migrations.upgrade(metadata, folder, url) == []
    assert migrations.current(url) == migrations.head(folder)
    with engine.connect() as conn:
        count = select(func.count()).select_from(metadata.tables["outbox"])
        assert conn.execute(count).scalar_one() == 1
    engine.dispose()


def test_a_failing_revision_leaves_the_previous_one(tmp_path: Path) -> None:
    metadata, folder = service_schema("catalog")
    head = migrations.head(folder)
    broken = failing_revision(folder, tmp_path, head)
    url = _url(tmp_path)
    with pytest.raises(migrations.MigrationError) as caught:
        migrations.upgrade(metadata, broken, url)
    assert caught.value.revision == "9999_broken"
    assert "9999_broken" in str(caught.value) and caught.value.previous == head
    assert migrations.current(url) == head
    assert "half_done" not in inspect(create_engine(url)).get_table_names()


def test_migrate_command_exits_non_zero_naming_the_revision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from services.orders import __main__ as orders_main

    _metadata, folder = service_schema("orders")
    head = migrations.head(folder)
    broken = failing_revision(folder, tmp_path, head)
    monkeypatch.setattr(orders_main, "MIGRATIONS_DIR", broken)
    monkeypatch.setenv("ORDERS_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'service.db'}")
    assert orders_main.main(["migrate"]) == 1
    err = capsys.readouterr().err
    assert "migration 9999_broken failed" in err and f"stays at revision {head}" in err
    assert migrations.current(_url(tmp_path)) == head


@pytest.mark.parametrize(("name", "at"), [("inventory", None), ("notifications", "0001")])
def test_serve_refuses_a_database_not_at_head_naming_both_revisions(
    name: str,
    at: str | None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An aiohttp service's `serve`: one error line on stderr, exit 1, nothing served."""
    import importlib

    main = importlib.import_module(f"services.{name}.__main__")
    metadata, folder = service_schema(name)
    if at is not None:
        migrations.upgrade(metadata, folder, _url(tmp_path), at)
    monkeypatch.setattr(main, "run", lambda *_a, **_k: pytest.fail("served a stale schema"))
    monkeypatch.setenv(
        f"{name.upper()}_DATABASE_URL", f"sqlite+aiosqlite:///{tmp_path / 'service.db'}"
    )
    assert main.main(["serve"]) == 1
    (err,) = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    found = at or "base (empty)"
    assert f"{name} will not start: its database is at revision {found}" in err
    assert f"this release needs {migrations.head(folder)}" in err
    assert f"python -m services.{name} migrate" in err


def test_a_flask_service_refuses_to_build_its_app_on_an_older_revision(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """gunicorn's `create_app()` (no settings: the serving path) raises, so no worker boots."""
    from services.catalog.app import create_app

    metadata, folder = service_schema("catalog")
    url = _url(tmp_path)
    migrations.upgrade(metadata, folder, url, "0001")
    monkeypatch.setenv("CATALOG_DATABASE_URL", url)
    with pytest.raises(
        migrations.SchemaNotAtHead, match="at revision 0001, this release needs 0002"
    ):
        create_app()
    migrations.upgrade(metadata, folder, url)
    migrations.require_head("catalog", folder, url)  # at head: no complaint
