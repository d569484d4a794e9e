"""`python -m services.identity init [--seed-dev] [--credentials-file PATH]
[--orders-client-file PATH]` and `rotate-keys`."""

from __future__ import annotations

import argparse
import json
import sys

from sqlalchemy.orm import Session

from chassis import ConfigError, create_db_engine

from .domain.passwords import Passwords
from .service_layer.setup import (
    DEFAULT_CREDENTIALS_FILE,
    ORDERS_CLIENT_FILE,
    init_storage,
    keystore_for,
    seed_dev,
    seed_orders_client,
    write_credentials,
)
from .settings import IdentitySettings


def _init(settings: IdentitySettings, args: argparse.Namespace) -> dict[str, object]:
    engine = create_db_engine(settings.database_url)
    try:
        report = init_storage(settings, engine)
        result: dict[str, object] = {
            "database": engine.url.render_as_string(hide_password=True),
            "keys_file": settings.keys_file,
            "created_key": report.created_key,
        }
        if args.seed_dev:
            with Session(engine) as session:
                credentials, changed = seed_dev(
                    session, Passwords(), settings, args.credentials_file
                )
                orders_client, orders_changed = seed_orders_client(session, args.orders_client_file)
                session.commit()
            if changed:
                write_credentials(args.credentials_file, credentials)
            if orders_changed:
                write_credentials(args.orders_client_file, orders_client)
            result.update(
                credentials_file=args.credentials_file,
                credentials_written=changed,
                orders_client_file=args.orders_client_file,
                orders_client_written=orders_changed,
            )
        return result
    finally:
        engine.dispose()


def _rotate(settings: IdentitySettings) -> dict[str, object]:
    key = keystore_for(settings).rotate()
    return {"kid": key.kid, "activates_at": key.activates_at, "keys_file": settings.keys_file}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m services.identity")
    commands = parser.add_subparsers(dest="command", required=True)
    init = commands.add_parser("init", help="create tables, the first signing key, the secret")
    init.add_argument("--seed-dev", action="store_true", help="create the dev clients and user")
    init.add_argument("--credentials-file", default=DEFAULT_CREDENTIALS_FILE)
    init.add_argument(
        "--orders-client-file",
        default=ORDERS_CLIENT_FILE,
        help="where --seed-dev writes the orders-service client's id and secret",
    )
    commands.add_parser("rotate-keys", help="add a signing key (signs after the delay)")
    args = parser.parse_args(argv)
    try:
        settings = IdentitySettings.from_env()
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    result = _init(settings, args) if args.command == "init" else _rotate(settings)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
