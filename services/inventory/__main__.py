"""`python -m services.inventory init [--seed-demo]` creates the tables (idempotent) and seeds
demo stock; `python -m services.inventory serve` runs the app on uvloop (INVENTORY_HOST/PORT).
"""

from __future__ import annotations

import argparse
import logging
import sys

import orjson
from sqlalchemy import func, insert, select

from chassis import ConfigError, configure_logging, create_db_engine, sync_url
from chassis.aiohttp import run

from .adapters.orm import metadata, stock
from .app import create_app
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


def init(settings: InventorySettings, *, seed: bool = False) -> dict[str, int | bool]:
    engine = create_db_engine(sync_url(settings.database_url))
    seeded = 0
    try:
        metadata.create_all(engine)  # checkfirst: safe to run again
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
    return {"tables": True, "seeded": seeded}


def serve(settings: InventorySettings) -> None:
    run(create_app(settings), settings.host, settings.port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.inventory")
    commands = parser.add_subparsers(dest="command", required=True)
    init_cmd = commands.add_parser("init", help="create the tables (idempotent)")
    init_cmd.add_argument(
        "--seed-demo", action="store_true", help="stock the catalog's demo skus if empty"
    )
    commands.add_parser("serve", help="serve HTTP on INVENTORY_HOST:INVENTORY_PORT")
    args = parser.parse_args(argv)
    try:
        settings = InventorySettings.from_env()
    except ConfigError as exc:
        configure_logging("inventory")
        print(exc, file=sys.stderr)
        return 2
    if args.command == "serve":
        serve(settings)
        return 0
    result = init(settings, seed=args.seed_demo)
    print(orjson.dumps({"command": args.command, **result}).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
