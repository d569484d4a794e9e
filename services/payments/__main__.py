"""`python -m services.payments migrate` upgrades the database to the newest revision (`init`
does the same, kept for scripts).

Serve with gunicorn: `gunicorn 'services.payments.app:create_app()' -b 127.0.0.1:8105`.
"""

from __future__ import annotations

import argparse
import sys

import orjson

from chassis import ConfigError
from chassis.migrations import MigrationError, upgrade

from .adapters.orm import metadata
from .migrations import MIGRATIONS_DIR
from .settings import PaymentsSettings


def migrate(settings: PaymentsSettings) -> dict[str, object]:
    """Upgrade the database to the newest revision (ADR 0019): the step before `serve`."""
    return {"applied": upgrade(metadata, MIGRATIONS_DIR, settings.database_url)}


def init(settings: PaymentsSettings) -> dict[str, object]:
    """Kept for `make up` and scripts: the same as `migrate` (there is nothing to seed)."""
    return {"tables": True, **migrate(settings)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.payments")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("migrate", help="upgrade the database to the newest revision")
    commands.add_parser("init", help="the same as migrate (kept for scripts)")
    args = parser.parse_args(argv)
    try:
        settings = PaymentsSettings.from_env()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    try:
        result = migrate(settings) if args.command == "migrate" else init(settings)
    except MigrationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(orjson.dumps({"command": args.command, **result}).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
