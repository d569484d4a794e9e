"""Schema migrations: Alembic revisions in versions/, run by `chassis.migrations` (ADR 0019)."""

from pathlib import Path

MIGRATIONS_DIR = Path(__file__).resolve().parent
