"""`python -m services.catalog migrate` (upgrade to the newest revision) and
`init [--seed-demo]` (migrate, then seed the demo products if there are none)."""

from __future__ import annotations

import argparse
import sys

import orjson

from chassis import ConfigError, create_db_engine
from chassis.migrations import MigrationError, upgrade

from .adapters.orm import metadata
from .migrations import MIGRATIONS_DIR
from .service_layer.demo import seed_demo
from .service_layer.unit_of_work import SqlAlchemyUnitOfWork
from .settings import CatalogSettings


def migrate(settings: CatalogSettings) -> dict[str, object]:
    """Upgrade the database to the newest revision (ADR 0019): the step before `serve`."""
    return {"applied": upgrade(metadata, MIGRATIONS_DIR, settings.database_url)}


def init(settings: CatalogSettings, *, seed: bool = False) -> dict[str, object]:
    migrated = migrate(settings)  # a no-op at head: `init` alone still works
    engine = create_db_engine(settings.database_url)
    try:
        seeded = seed_demo(SqlAlchemyUnitOfWork(engine)) if seed else 0
    finally:
        engine.dispose()
    return {"tables": True, **migrated, "seeded": seeded}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.catalog")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="upgrade the database to the newest revision")
    init_cmd = commands.add_parser("init", help="migrate, then seed (idempotent)")
    init_cmd.add_argument(
        "--seed-demo", action="store_true", help="insert demo products if there are none"
    )
    args = parser.parse_args(argv)
    try:
        settings = CatalogSettings.from_env()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        result = (
            migrate(settings) if args.command == "migrate" else init(settings, seed=args.seed_demo)
        )
    except MigrationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(orjson.dumps({"command": args.command, **result}).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
