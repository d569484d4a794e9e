"""`python -m services.orders init` (tables, idempotent) and `serve` (uvloop, ORDERS_HOST /
ORDERS_PORT)."""

from __future__ import annotations

import argparse
import logging
import sys

import orjson

from chassis import ConfigError, configure_logging
from chassis.aiohttp import run
from chassis.db import create_tables

from .adapters.orm import metadata
from .settings import OrdersSettings

log = logging.getLogger("portico.orders")


def init(settings: OrdersSettings) -> dict[str, object]:
    create_tables(metadata, settings.database_url)
    return {"tables": True}


def serve(settings: OrdersSettings) -> None:
    from .app import create_app

    run(create_app(settings), settings.host, settings.port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.orders")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("init", help="create the tables (idempotent)")
    commands.add_parser("serve", help="serve HTTP and run sagas (ORDERS_HOST, ORDERS_PORT)")
    args = parser.parse_args(argv)
    try:
        settings = OrdersSettings.from_env()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.command == "serve":
        configure_logging("orders", settings.log_level)
        serve(settings)
        return 0
    print(orjson.dumps({"command": args.command, **init(settings)}).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
