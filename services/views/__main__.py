"""`python -m services.views migrate` (upgrade to the newest revision), `init` (the same, kept
for scripts), `serve` (uvloop, VIEWS_HOST / VIEWS_PORT) and `rebuild` (drop the order-derived
read models and fold orders' whole history feed again; run it with `serve` stopped)."""

from __future__ import annotations

import argparse
import logging
import sys

import orjson

from chassis import ConfigError, configure_logging, create_db_engine
from chassis.db import sync_url
from chassis.migrations import MigrationError, SchemaNotAtHead, require_head, upgrade

from .adapters.feed import FeedUnavailable
from .adapters.orm import metadata
from .migrations import MIGRATIONS_DIR
from .service_layer.lag import LagTracker
from .service_layer.projector import Projector
from .settings import ViewsSettings

log = logging.getLogger("portico.views")


def migrate(settings: ViewsSettings) -> dict[str, object]:
    """Upgrade the database to the newest revision (ADR 0019): the step before `serve`."""
    return {"applied": upgrade(metadata, MIGRATIONS_DIR, settings.database_url)}


def init(settings: ViewsSettings) -> dict[str, object]:
    """Kept for `make up` and scripts: the same as `migrate` (there is nothing to seed)."""
    return {"tables": True, **migrate(settings)}


def rebuild(settings: ViewsSettings) -> dict[str, object]:
    """Empty the order-derived read models and apply orders' history from position 0.
    Notification counts and the product map come from other publishers and are kept."""
    from .app import feed_client

    require_head("views", MIGRATIONS_DIR, settings.database_url)
    engine = create_db_engine(sync_url(settings.database_url))
    try:
        lag = LagTracker()
        applied = Projector(lag, feed_client(settings), page=settings.feed_page).rebuild(engine)
    finally:
        engine.dispose()
    return {"applied": applied, "position": lag.position}


def serve(settings: ViewsSettings) -> None:
    require_head("views", MIGRATIONS_DIR, settings.database_url)  # never serve a stale schema
    from chassis.aiohttp import run

    from .app import create_app

    run(create_app(settings), settings.host, settings.port)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.views")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="upgrade the database to the newest revision")
    commands.add_parser("init", help="the same as migrate (kept for scripts)")
    commands.add_parser("serve", help="serve HTTP and follow events (VIEWS_HOST, VIEWS_PORT)")
    commands.add_parser(
        "rebuild", help="drop the read models and rebuild them from orders' history feed"
    )
    args = parser.parse_args(argv)
    try:
        settings = ViewsSettings.from_env()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    configure_logging("views", settings.log_level)
    if args.command == "serve":
        try:
            serve(settings)
        except SchemaNotAtHead as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0
    try:
        if args.command == "rebuild":
            result = rebuild(settings)
        else:
            result = migrate(settings) if args.command == "migrate" else init(settings)
    except (MigrationError, SchemaNotAtHead, FeedUnavailable) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(orjson.dumps({"command": args.command, **result}).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
