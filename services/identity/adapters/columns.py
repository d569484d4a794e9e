"""Add the columns a model gained since a database was created (`init` runs it).

`create_all` creates missing tables but never alters existing ones, so a database made by an
older release would lack e.g. `users.role` and every request touching it would fail. The
project has no migration tool yet; this covers the one kind of change identity has made so far
(new nullable or server-defaulted columns) and refuses anything else loudly.
"""

from __future__ import annotations

from sqlalchemy import Engine, MetaData, inspect, text
from sqlalchemy.schema import CreateColumn

__all__ = ["add_missing_columns"]


def add_missing_columns(engine: Engine, metadata: MetaData) -> list[str]:
    """ALTER TABLE ... ADD COLUMN for each model column missing from an existing table;
    returns `table.column` for each one added.
    """
    inspector = inspect(engine)
    preparer = engine.dialect.identifier_preparer
    # Two pods running init at once must not fail on each other's column.
    if_missing = "IF NOT EXISTS " if engine.dialect.name == "postgresql" else ""
    added: list[str] = []
    with engine.begin() as conn:
        for table in metadata.sorted_tables:
            if not inspector.has_table(table.name):
                continue
            present = {c["name"] for c in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name in present:
                    continue
                if not column.nullable and column.server_default is None:
                    raise RuntimeError(
                        f"cannot add {table.name}.{column.name} to an existing table: it is "
                        "NOT NULL without a server default"
                    )
                ddl = CreateColumn(column).compile(dialect=engine.dialect)
                conn.execute(
                    text(f"ALTER TABLE {preparer.format_table(table)} ADD COLUMN {if_missing}{ddl}")
                )
                added.append(f"{table.name}.{column.name}")
    return added
