"""`python -m services.catalog init [--seed-demo]`: create the tables (idempotent), seed demos."""

from __future__ import annotations

import argparse
import sys

import orjson

from chassis import ConfigError, create_db_engine

from .adapters.orm import metadata
from .service_layer.demo import seed_demo
from .service_layer.unit_of_work import SqlAlchemyUnitOfWork
from .settings import CatalogSettings


def init(settings: CatalogSettings, *, seed: bool = False) -> dict[str, int | bool]:
    engine = create_db_engine(settings.database_url)
    try:
        metadata.create_all(engine)  # checkfirst: safe to run again
        seeded = seed_demo(SqlAlchemyUnitOfWork(engine)) if seed else 0
    finally:
        engine.dispose()
    return {"tables": True, "seeded": seeded}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.catalog")
    commands = parser.add_subparsers(dest="command", required=True)
    init_cmd = commands.add_parser("init", help="create the tables (idempotent)")
    init_cmd.add_argument(
        "--seed-demo", action="store_true", help="insert demo products if there are none"
    )
    args = parser.parse_args(argv)
    try:
        settings = CatalogSettings.from_env()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    result = init(settings, seed=args.seed_demo)
    print(orjson.dumps({"command": args.command, **result}).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
