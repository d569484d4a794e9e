"""`create_tables` brings a table from an older release up to date: nullable columns (and
their indexes) are added in place; a NOT NULL column without a default is refused by name."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import Column, Index, Integer, MetaData, String, Table, inspect

from chassis import create_db_engine
from chassis.db import create_tables


def _schema(*extra: Column[str]) -> MetaData:
    md = MetaData()
    Table("things", md, Column("id", Integer, primary_key=True), Column("name", String(9)), *extra)
    return md


def test_missing_nullable_columns_and_their_indexes_are_added(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 't.db'}"
    assert create_tables(_schema(), url) == []
    newer = _schema(Column("owner", String(255)))
    Index("ix_things_owner", newer.tables["things"].c.owner)
    assert create_tables(newer, url) == ["things.owner"]
    assert create_tables(newer, url) == []
    engine = create_db_engine(url)
    try:
        found = inspect(engine)
        assert "owner" in {c["name"] for c in found.get_columns("things")}
        assert "ix_things_owner" in {i["name"] for i in found.get_indexes("things")}
    finally:
        engine.dispose()


def test_a_missing_not_null_column_needs_a_migration(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 't.db'}"
    create_tables(_schema(), url)
    with pytest.raises(RuntimeError, match=r"things\.kind .*needs a migration"):
        create_tables(_schema(Column("kind", String(9), nullable=False)), url)
