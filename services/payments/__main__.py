"""`python -m services.payments init`: create the tables (idempotent).

Serve with gunicorn: `gunicorn 'services.payments.app:create_app()' -b 127.0.0.1:8105`.
"""

from __future__ import annotations

import argparse
import sys

import orjson

from chassis import ConfigError
from chassis.db import create_tables

from .adapters.orm import metadata
from .settings import PaymentsSettings


def init(settings: PaymentsSettings) -> dict[str, object]:
    """Create the tables; on a database from an older release, add the columns it lacks
    (`payments.owner`: its old rows keep no owner, readable with payments:read:all only)."""
    added = create_tables(metadata, settings.database_url)
    return {"tables": True, "columns_added": added}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.payments")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("init", help="create the tables (idempotent)")
    args = parser.parse_args(argv)
    try:
        settings = PaymentsSettings.from_env()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(orjson.dumps({"command": args.command, **init(settings)}).decode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
