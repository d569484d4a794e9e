"""`python -m services.notifications migrate` (upgrade to the newest revision), `init` (the
same, kept for scripts) and `serve` (uvloop,
NOTIFICATIONS_HOST / NOTIFICATIONS_PORT)."""

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
from .settings import NotificationsSettings

log = logging.getLogger("portico.notifications")


def migrate(settings: NotificationsSettings) -> dict[str, object]:
    """Upgrade the database to the newest revision (ADR 0019): the step before `serve`."""
    return {"applied": upgrade(metadata, MIGRATIONS_DIR, settings.database_url)}


def init(settings: NotificationsSettings) -> dict[str, object]:
    """Kept for `make up` and scripts: the same as `migrate` (there is nothing to seed)."""
    return {"tables": True, **migrate(settings)}


def serve(settings: NotificationsSettings) -> None:
    require_head(
        "notifications", MIGRATIONS_DIR, settings.database_url
    )  # never serve a stale schema
    from .app import create_app

    run(create_app(settings), settings.host, settings.port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.notifications")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="upgrade the database to the newest revision")
    commands.add_parser("init", help="the same as migrate (kept for scripts)")
    commands.add_parser(
        "serve", help="serve HTTP and consume events (NOTIFICATIONS_HOST, NOTIFICATIONS_PORT)"
    )
    args = parser.parse_args(argv)
    try:
        settings = NotificationsSettings.from_env()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if args.command == "serve":
        configure_logging("notifications", settings.log_level)
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
