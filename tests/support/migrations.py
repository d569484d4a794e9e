"""Every service that owns a database, with its metadata and migrations folder (ADR 0019)."""

from __future__ import annotations

import importlib
from pathlib import Path

from sqlalchemy import MetaData

SERVICES = ("identity", "catalog", "payments", "inventory", "orders", "notifications")


def service_schema(name: str) -> tuple[MetaData, Path]:
    orm = importlib.import_module(f"services.{name}.adapters.orm")
    metadata = orm.Base.metadata if name == "identity" else orm.metadata
    folder = importlib.import_module(f"services.{name}.migrations").MIGRATIONS_DIR
    return metadata, folder


def failing_revision(folder: Path, tmp: Path, down: str) -> Path:
    """A copy of a migrations folder plus a revision `9999_broken` whose second statement
    fails after its first succeeded (so a half-applied revision would show)."""
    import shutil

    copy = tmp / "migrations"
    shutil.copytree(folder, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "versions" / "9999_broken.py").write_text(
        f'''revision = "9999_broken"
down_revision = "{down}"
branch_labels = None
depends_on = None

import sqlalchemy as sa
from alembic import op


def upgrade() -> None:
    op.create_table("half_done", sa.Column("id", sa.Integer, primary_key=True))
    op.execute("SELECT * FROM no_such_table")


def downgrade() -> None:
    op.drop_table("half_done")
'''
    )
    return copy
