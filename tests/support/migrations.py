"""Every service that owns a database, with its metadata and migrations folder (ADR 0019)."""

from __future__ import annotations

import importlib
from pathlib import Path

from sqlalchemy import MetaData

SERVICES = ("identity", "catalog", "payments", "inventory", "orders", "notifications", "views")


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


_TEMPLATES: dict[str, Path] = {}


def migrated(name: str, url: str) -> None:
    """Make the SQLite database at `url` one at the head of `name`'s migrations, as `init`
    without seeding does: migrated once per test process into a template, then copied (a copy
    takes microseconds, a migration run tens of milliseconds - for every app a test builds)."""
    import atexit
    import shutil
    import tempfile

    from chassis import migrations

    template = _TEMPLATES.get(name)
    if template is None:
        metadata, folder = service_schema(name)
        scratch = Path(tempfile.mkdtemp(prefix=f"portico-{name}-head-"))
        atexit.register(shutil.rmtree, scratch, True)
        template = scratch / "head.db"
        migrations.upgrade(metadata, folder, f"sqlite:///{template}")
        _TEMPLATES[name] = template
    assert url.startswith("sqlite") and ":///" in url, url
    shutil.copyfile(template, url.split(":///", 1)[1])
