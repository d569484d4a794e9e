"""`python -m services.orders migrate` (upgrade to the newest revision), `init` (the
same, kept for scripts) and `serve` (uvloop, ORDERS_HOST / ORDERS_PORT)."""

from __future__ import annotations

import argparse
import logging
import sys

import orjson

from chassis import ConfigError, configure_logging
from chassis.aiohttp import run
from chassis.migrations import MigrationError, SchemaNotAtHead, require_head, upgrade

from .adapters.orm import metadata
from .migrations import MIGRATIONS_DIR
from .settings import OrdersSettings

log = logging.getLogger("portico.orders")


def migrate(settings: OrdersSettings) -> dict[str, object]:
    """Upgrade the database to the newest revision (ADR 0019): the step before `serve`."""
    return {"applied": upgrade(metadata, MIGRATIONS_DIR, settings.database_url)}


def init(settings: OrdersSettings) -> dict[str, object]:
    """Kept for `make up` and scripts: the same as `migrate` (there is nothing to seed)."""
    return {"tables": True, **migrate(settings)}


def serve(settings: OrdersSettings) -> None:
    require_head("orders", MIGRATIONS_DIR, settings.database_url)
    from .app import create_app

    run(create_app(settings), settings.host, settings.port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.orders")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="upgrade the database to the newest revision")
    commands.add_parser("init", help="the same as migrate (kept for scripts)")
    commands.add_parser("serve", help="serve HTTP and run sagas (ORDERS_HOST, ORDERS_PORT)")
    args = parser.parse_args(argv)
    try:
        settings = OrdersSettings.from_env()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.command == "serve":
        configure_logging("orders", settings.log_level)
        try:
            serve(settings)
        except SchemaNotAtHead as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0
    try:
        result = migrate(settings) if args.command == "migrate" else init(settings)
    except MigrationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(orjson.dumps({"command": args.command, **result}).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
