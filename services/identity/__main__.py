"""identity's command line (services/identity/README.md has the whole reference):

    python -m services.identity migrate
    python -m services.identity init [--seed-dev] [--clients-file PATH] ...
    python -m services.identity rotate-keys
    python -m services.identity clients add|list|rotate-secret|remove ...
    python -m services.identity users add USERNAME [--role R] [--email E] [--password-file F]
    python -m services.identity users set-role USERNAME ROLE
    python -m services.identity api-keys create|list|rotate|revoke ...

Every command prints one JSON document on stdout. Exit status: 0 done, 1 the command could not
be done as asked (the reason on stderr), 2 bad configuration (settings or the clients file).
Staff and admin accounts exist only through `users`: the API registers customers.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from marshmallow import ValidationError
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from chassis import ConfigError, create_db_engine
from chassis.migrations import MigrationError

from .adapters.repository import SqlUserRepository
from .domain.passwords import Passwords
from .domain.roles import Role
from .schemas import RegisterSchema
from .service_layer import api_keys, clients
from .service_layer.setup import (
    DEFAULT_CREDENTIALS_FILE,
    ORDERS_CLIENT_FILE,
    VIEWS_CLIENT_FILE,
    init_storage,
    keystore_for,
    migrate,
    seed_dev,
    seed_orders_client,
    seed_views_client,
    write_credentials,
)
from .service_layer.users import UsernameTaken, find_user, register
from .settings import IdentitySettings


class CommandError(Exception):
    """The command cannot be done as asked: exit status 1, the message on stderr."""


def _init(settings: IdentitySettings, args: argparse.Namespace) -> dict[str, object]:
    clients_file = settings.clients_file if args.clients_file is None else args.clients_file
    # Read and validate the whole file (and its secrets) before anything is written.
    specs = clients.load_clients_file(clients_file) if clients_file else []
    engine = create_db_engine(settings.database_url)
    try:
        report = init_storage(settings, engine)
        result: dict[str, object] = {
            "database": engine.url.render_as_string(hide_password=True),
            "keys_file": settings.keys_file,
            "created_key": report.created_key,
            "migrations_applied": list(report.migrations_applied),
        }
        if args.seed_dev:
            with Session(engine) as session:
                credentials, changed = seed_dev(
                    session, Passwords(), settings, args.credentials_file
                )
                orders_client, orders_changed = seed_orders_client(session, args.orders_client_file)
                views_client, views_changed = seed_views_client(session, args.views_client_file)
                session.commit()
            if changed:
                write_credentials(args.credentials_file, credentials)
            if orders_changed:
                write_credentials(args.orders_client_file, orders_client)
            if views_changed:
                write_credentials(args.views_client_file, views_client)
            result.update(
                credentials_file=args.credentials_file,
                credentials_written=changed,
                orders_client_file=args.orders_client_file,
                orders_client_written=orders_changed,
                views_client_file=args.views_client_file,
                views_client_written=views_changed,
            )
        if specs:  # after the seed: the file has the last word on the clients it lists
            with Session(engine) as session:
                for spec in specs:
                    clients.upsert_client(session, spec)
                session.commit()
        result.update(
            clients_file=clients_file or None, clients_applied=[s.client_id for s in specs]
        )
        return result
    finally:
        engine.dispose()


def _migrate(settings: IdentitySettings, args: argparse.Namespace) -> dict[str, object]:
    engine = create_db_engine(settings.database_url)
    try:
        return {"command": "migrate", "applied": migrate(engine)}
    finally:
        engine.dispose()


def _rotate_keys(settings: IdentitySettings, args: argparse.Namespace) -> dict[str, object]:
    key = keystore_for(settings).rotate()
    return {"kid": key.kid, "activates_at": key.activates_at, "keys_file": settings.keys_file}


def _in_session(
    settings: IdentitySettings, work: Callable[[Session], dict[str, Any]]
) -> dict[str, Any]:
    """Run `work` in one transaction, committed only when it returns. The database is migrated
    first, so these commands work before or after `init`.
    """
    engine: Engine = create_db_engine(settings.database_url)
    try:
        migrate(engine)
        with Session(engine) as session:
            result = work(session)
            session.commit()
        return result
    except (clients.ClientError, api_keys.ApiKeyError) as exc:
        raise CommandError(str(exc)) from None
    finally:
        engine.dispose()


def _secret_from(path: str | None) -> str | None:
    return clients.read_secret_file(path, "--secret-file") if path else None


def _clients_add(settings: IdentitySettings, args: argparse.Namespace) -> dict[str, Any]:
    data = {
        "client_id": args.client_id,
        "name": args.name or args.client_id,
        "grant_types": args.grant_types,
        "scope": args.scope,
        "token_endpoint_auth_method": args.auth_method,
        "redirect_uris": args.redirect_uris,
    }
    try:
        spec = clients.client_spec(data, _secret_from(args.secret_file))
    except clients.ClientError as exc:
        raise CommandError(str(exc)) from None

    def add(session: Session) -> dict[str, Any]:
        result = clients.describe_client(clients.add_client(session, spec))
        if spec.secret and not args.secret_file:
            result["client_secret"] = spec.secret  # shown once; only its digest is stored
        return result

    return _in_session(settings, add)


def _clients_list(settings: IdentitySettings, args: argparse.Namespace) -> dict[str, Any]:
    return _in_session(settings, lambda session: {"clients": clients.list_clients(session)})


def _clients_rotate(settings: IdentitySettings, args: argparse.Namespace) -> dict[str, Any]:
    if args.retire_previous:
        if args.secret_file:
            raise CommandError("--retire-previous takes no --secret-file")

        def retire(session: Session) -> dict[str, Any]:
            had = clients.retire_previous_secret(session, args.client_id)
            return {"client_id": args.client_id, "previous_retired": had}

        return _in_session(settings, retire)
    given = _secret_from(args.secret_file)

    def rotate(session: Session) -> dict[str, Any]:
        secret = clients.rotate_secret(session, args.client_id, given)
        result: dict[str, Any] = {"client_id": args.client_id, "previous_secret_valid": True}
        if not given:
            result["client_secret"] = secret
        return result

    return _in_session(settings, rotate)


def _clients_remove(settings: IdentitySettings, args: argparse.Namespace) -> dict[str, Any]:
    def remove(session: Session) -> dict[str, Any]:
        tokens = clients.remove_client(session, args.client_id)
        return {"removed": args.client_id, "tokens_removed": tokens}

    return _in_session(settings, remove)


def _read_password(path: str | None) -> str:
    """From the file (its first line), else stdin: a prompt on a terminal, else its first line."""
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise CommandError(f"--password-file: cannot read {path}: {exc.strerror}") from None
    elif sys.stdin.isatty():
        text = getpass.getpass("Password: ")
    else:
        text = sys.stdin.readline()
    return text.splitlines()[0] if text.splitlines() else ""


def _users_add(settings: IdentitySettings, args: argparse.Namespace) -> dict[str, Any]:
    password = _read_password(args.password_file)
    fields = {"username": args.username, "password": password}
    if args.email is not None:
        fields["email"] = args.email
    try:
        # The rules self-registration applies, except that the email is optional here.
        data = RegisterSchema().load(fields, partial=("email",))
    except ValidationError as exc:
        raise CommandError(json.dumps(exc.messages)) from None
    passwords = Passwords()

    def add(session: Session) -> dict[str, Any]:
        try:
            user = register(
                SqlUserRepository(session),
                passwords,
                username=data["username"],
                email=data.get("email", ""),
                password=data["password"],
                role=Role(args.role),
            )
        except UsernameTaken as exc:
            raise CommandError(
                f"the username {exc} is taken (users set-role changes a role)"
            ) from None
        return {"id": user.id, "username": user.username, "role": user.role}

    return _in_session(settings, add)


def _users_set_role(settings: IdentitySettings, args: argparse.Namespace) -> dict[str, Any]:
    def set_role(session: Session) -> dict[str, Any]:
        user = find_user(SqlUserRepository(session), args.username)
        if user is None:
            raise CommandError(f"no user {args.username}")
        previous, user.role = user.role, Role(args.role).value
        return {"id": user.id, "username": user.username, "role": user.role, "was": previous}

    return _in_session(settings, set_role)


def _issued(issued: api_keys.IssuedKey) -> dict[str, Any]:
    """The key's description and the key itself: shown this once, only its digest is kept."""
    return {**api_keys.describe_key(issued.row), "api_key": issued.key}


def _keys_create(settings: IdentitySettings, args: argparse.Namespace) -> dict[str, Any]:
    return _in_session(
        settings,
        lambda session: _issued(
            api_keys.create_key(session, args.owner, args.scopes, args.rate_class, args.name)
        ),
    )


def _keys_list(settings: IdentitySettings, args: argparse.Namespace) -> dict[str, Any]:
    return _in_session(settings, lambda session: {"api_keys": api_keys.list_keys(session)})


def _keys_rotate(settings: IdentitySettings, args: argparse.Namespace) -> dict[str, Any]:
    return _in_session(settings, lambda s: _issued(api_keys.rotate_key(s, args.key_id)))


def _keys_revoke(settings: IdentitySettings, args: argparse.Namespace) -> dict[str, Any]:
    return _in_session(
        settings, lambda s: api_keys.describe_key(api_keys.revoke_key(s, args.key_id))
    )


def _api_key_commands(commands: Any) -> None:
    key_cmds = commands.add_parser("api-keys", help="API keys (ADR 0036)").add_subparsers(
        dest="action", required=True
    )
    create = key_cmds.add_parser("create", help="a new key (printed once: pk_<id>_<secret>)")
    create.set_defaults(run=_keys_create)
    create.add_argument("--owner", required=True, help="user:<username> or client:<client_id>")
    create.add_argument("--scopes", required=True, help="space-separated; capped by the owner")
    create.add_argument(
        "--class",
        dest="rate_class",
        default="authenticated",
        help="the gateway's rate-limit consumer class for this key (default: authenticated)",
    )
    create.add_argument("--name", default="", help="what the key is for")
    key_cmds.add_parser("list", help="every key (never its secret)").set_defaults(run=_keys_list)
    rotate = key_cmds.add_parser("rotate", help="a new secret; the old one stops working")
    rotate.set_defaults(run=_keys_rotate)
    rotate.add_argument("key_id")
    revoke = key_cmds.add_parser("revoke", help="the key stops working")
    revoke.set_defaults(run=_keys_revoke)
    revoke.add_argument("key_id")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m services.identity")
    commands = parser.add_subparsers(dest="command", required=True)

    commands.add_parser(
        "migrate", help="upgrade the database to the newest revision (ADR 0019)"
    ).set_defaults(run=_migrate)
    init = commands.add_parser("init", help="migrate, the first signing key, the secret")
    init.set_defaults(run=_init)
    init.add_argument("--seed-dev", action="store_true", help="create the dev clients and user")
    init.add_argument("--credentials-file", default=DEFAULT_CREDENTIALS_FILE)
    init.add_argument(
        "--orders-client-file",
        default=ORDERS_CLIENT_FILE,
        help="where --seed-dev writes the orders-service client's id and secret",
    )
    init.add_argument(
        "--views-client-file",
        default=VIEWS_CLIENT_FILE,
        help="where --seed-dev writes the views-service client's id and secret",
    )
    init.add_argument(
        "--clients-file",
        default=None,
        help="declarative clients file to apply (default: $IDENTITY_CLIENTS_FILE; '' = none)",
    )
    rotate_keys = commands.add_parser("rotate-keys", help="add a signing key (signs later)")
    rotate_keys.set_defaults(run=_rotate_keys)

    roles = [r.value for r in Role]
    client_cmds = commands.add_parser("clients", help="OAuth clients").add_subparsers(
        dest="action", required=True
    )
    add = client_cmds.add_parser("add", help="register a client (prints a generated secret)")
    add.set_defaults(run=_clients_add)
    add.add_argument("client_id")
    add.add_argument("--name", help="shown on the consent page (default: the client id)")
    add.add_argument(
        "--grant-types",
        nargs="+",
        required=True,
        metavar="GRANT",
        help=" | ".join(clients.GRANT_TYPES),
    )
    add.add_argument("--scope", required=True, help="space-separated scopes it may ask for")
    add.add_argument(
        "--auth-method",
        default="client_secret_basic",
        choices=clients.AUTH_METHODS,
        help="'none' makes a public client (PKCE, no secret)",
    )
    add.add_argument("--redirect-uri", dest="redirect_uris", action="append", default=[])
    add.add_argument("--secret-file", help="read the secret from here instead of generating one")
    client_cmds.add_parser("list", help="every client (never its secret)").set_defaults(
        run=_clients_list
    )
    rotate = client_cmds.add_parser(
        "rotate-secret",
        help="new current secret; the old one keeps working until --retire-previous",
    )
    rotate.set_defaults(run=_clients_rotate)
    rotate.add_argument("client_id")
    rotate.add_argument("--secret-file", help="the new secret (default: generated and printed)")
    rotate.add_argument(
        "--retire-previous",
        action="store_true",
        help="stop accepting the secret before the last rotation",
    )
    remove = client_cmds.add_parser("remove", help="delete a client and its tokens")
    remove.set_defaults(run=_clients_remove)
    remove.add_argument("client_id")

    user_cmds = commands.add_parser("users", help="accounts").add_subparsers(
        dest="action", required=True
    )
    user_add = user_cmds.add_parser("add", help="create an account (password from stdin)")
    user_add.set_defaults(run=_users_add)
    user_add.add_argument("username")
    user_add.add_argument("--role", choices=roles, default=Role.CUSTOMER.value)
    user_add.add_argument("--email")
    user_add.add_argument("--password-file", help="first line is the password (default: stdin)")
    set_role = user_cmds.add_parser("set-role", help="change an account's role")
    set_role.set_defaults(run=_users_set_role)
    set_role.add_argument("username")
    set_role.add_argument("role", choices=roles)
    _api_key_commands(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = IdentitySettings.from_env()
        result = args.run(settings, args)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    except (CommandError, MigrationError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
