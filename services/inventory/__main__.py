"""`python -m services.inventory migrate` upgrades the database to the newest revision;
`init [--seed-demo]` migrates and seeds demo stock; `serve` runs the app on uvloop
(INVENTORY_HOST/PORT), with the gRPC API beside it on INVENTORY_GRPC_PORT (0: none; ADR 0025).
"""

from __future__ import annotations

import argparse
import logging
import sys

import orjson
from sqlalchemy import func, insert, select

from chassis import ConfigError, configure_logging, create_db_engine, sync_url
from chassis.aiohttp import run
from chassis.migrations import MigrationError, SchemaNotAtHead, require_head, upgrade

from .adapters.orm import metadata, stock
from .app import create_app
from .entrypoints.grpc_server import add_grpc_server
from .migrations import MIGRATIONS_DIR
from .settings import InventorySettings

log = logging.getLogger("portico.inventory")

DEMO_UNITS = 50
# Low on purpose, so that the tour (and tests) can run an order out of stock.
DEMO_LOW = {"EL-0004": 3, "OD-0002": 2}
# The catalog's demo skus (services.catalog.service_layer.demo), written out here because no
# service imports another; a test that may import both keeps the two lists equal.
DEMO_SKUS = tuple(
    f"{group}-000{n}" for group in ("BK", "EL", "KT", "OD", "TY") for n in (1, 2, 3, 4)
)


def demo_stock() -> dict[str, int]:
    """Units per demo sku (the same skus as the catalog's demo products)."""
    return {sku: DEMO_LOW.get(sku, DEMO_UNITS) for sku in DEMO_SKUS}


def migrate(settings: InventorySettings) -> dict[str, object]:
    """Upgrade the database to the newest revision (ADR 0019): the step before `serve`."""
    return {"applied": upgrade(metadata, MIGRATIONS_DIR, settings.database_url)}


def init(settings: InventorySettings, *, seed: bool = False) -> dict[str, object]:
    migrated = migrate(settings)  # a no-op at head: `init` alone still works
    engine = create_db_engine(sync_url(settings.database_url))
    seeded = 0
    try:
        if seed:
            with engine.begin() as conn:
                if not conn.execute(select(func.count()).select_from(stock)).scalar_one():
                    rows = [
                        {"sku": sku, "on_hand": units, "reserved": 0}
                        for sku, units in demo_stock().items()
                    ]
                    conn.execute(insert(stock), rows)
                    seeded = len(rows)
    finally:
        engine.dispose()
    return {"tables": True, **migrated, "seeded": seeded}


def serve(settings: InventorySettings) -> None:
    require_head("inventory", MIGRATIONS_DIR, settings.database_url)
    app = create_app(settings)
    if settings.grpc_port:
        add_grpc_server(app, settings.host, settings.grpc_port, grace=settings.grpc_grace)
    run(app, settings.host, settings.port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.inventory")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="upgrade the database to the newest revision")
    init_cmd = commands.add_parser("init", help="migrate, then seed (idempotent)")
    init_cmd.add_argument(
        "--seed-demo", action="store_true", help="stock the catalog's demo skus if empty"
    )
    commands.add_parser(
        "serve", help="serve HTTP on INVENTORY_HOST:INVENTORY_PORT, gRPC on INVENTORY_GRPC_PORT"
    )
    args = parser.parse_args(argv)
    try:
        settings = InventorySettings.from_env()
    except ConfigError as exc:
        configure_logging("inventory")
        print(exc, file=sys.stderr)
        return 2
    if args.command == "serve":
        try:
            serve(settings)
        except SchemaNotAtHead as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0
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
