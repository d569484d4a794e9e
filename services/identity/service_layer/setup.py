"""`init`: tables, the first signing key and the secret key; `--seed-dev`: dev clients and user,
the `orders-service` client the orders saga calls catalog, inventory and payments with, and the
`views-service` client the read side reads orders' history feed with.

Everything here is idempotent. Seeding keeps credentials that still work (the file's secret
matches the stored digest, the file's password verifies) and resets only what does not, so a
developer's `var/dev-credentials.json` always holds a working set.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session

from chassis.migrations import upgrade

from ..adapters.files import read_or_create_secret, write_private
from ..adapters.keystore import KeyStore
from ..adapters.orm import Base, Client
from ..adapters.repository import SqlUserRepository
from ..domain import scopes
from ..domain.passwords import Passwords, secret_digest
from ..migrations import MIGRATIONS_DIR
from ..settings import IdentitySettings
from .users import find_user, register

__all__ = [
    "DEFAULT_CREDENTIALS_FILE",
    "DEV_CLIENT_ID",
    "DEV_REDIRECT_URI",
    "DEV_SCOPE",
    "ORDERS_CLIENT_FILE",
    "ORDERS_CLIENT_ID",
    "ORDERS_SCOPE",
    "PUBLIC_CLIENT_ID",
    "VIEWS_CLIENT_FILE",
    "VIEWS_CLIENT_ID",
    "VIEWS_SCOPE",
    "InitReport",
    "init_storage",
    "keystore_for",
    "migrate",
    "seed_dev",
    "seed_orders_client",
    "seed_views_client",
    "write_credentials",
]

DEV_CLIENT_ID = "portico-dev"
PUBLIC_CLIENT_ID = "portico-public"
DEMO_USERNAME = "demo"
DEV_REDIRECT_URI = "http://127.0.0.1:8765/callback"
# Every supported scope (the staff-only `:read:all` ones too): the dev client can act on every
# service, and a staff user signing in through it gets the same. Customers signing in through
# either dev client are capped by their role.
DEV_SCOPE = " ".join(scopes.SUPPORTED)
DEFAULT_CREDENTIALS_FILE = "var/dev-credentials.json"
ORDERS_CLIENT_ID = "orders-service"
ORDERS_SCOPE = "catalog:read inventory:write payments:write"
ORDERS_CLIENT_FILE = "var/orders/client.json"
# The read side reads orders' history feed with its own client (ADR 0030).
VIEWS_CLIENT_ID = "views-service"
VIEWS_SCOPE = "orders:events"
VIEWS_CLIENT_FILE = "var/views/client.json"


@dataclass(frozen=True)
class InitReport:
    created_key: str | None
    secret_key_file: str | None
    migrations_applied: tuple[str, ...] = ()


def keystore_for(settings: IdentitySettings) -> KeyStore:
    return KeyStore(
        settings.keys_file,
        token_ttl=settings.access_token_ttl,
        activation_delay=settings.key_activation_delay,
    )


def migrate(engine: Engine) -> list[str]:
    """Bring the database to the newest revision (ADR 0019); returns the revisions applied."""
    return upgrade(Base.metadata, MIGRATIONS_DIR, engine.url.render_as_string(hide_password=False))


def init_storage(settings: IdentitySettings, engine: Engine) -> InitReport:
    applied = migrate(engine)  # `init` keeps working alone: it migrates first (a no-op at head)
    key = keystore_for(settings).ensure()
    secret_file = None
    if not settings.secret_key:
        read_or_create_secret(settings.secret_key_file)
        secret_file = settings.secret_key_file
    return InitReport(
        created_key=key.kid if key else None,
        secret_key_file=secret_file,
        migrations_applied=tuple(applied),
    )


def _read_credentials(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _upsert_client(session: Session, client_id: str, **fields: Any) -> Client:
    client = session.get(Client, client_id)
    if client is None:
        client = Client(client_id=client_id, **fields)
        session.add(client)
    else:
        for name, value in fields.items():
            setattr(client, name, value)
    return client


def seed_dev(
    session: Session,
    passwords: Passwords,
    settings: IdentitySettings,
    credentials_file: str | Path = DEFAULT_CREDENTIALS_FILE,
) -> tuple[dict[str, str], bool]:
    """Create or repair the dev clients and demo user. Returns the credentials and whether the
    file must be (re)written; the caller commits, then calls `write_credentials`.
    """
    path = Path(credentials_file)
    known = _read_credentials(path)
    redirect_uris = list(dict.fromkeys((DEV_REDIRECT_URI, *settings.dev_redirect_uris)))

    client = session.get(Client, DEV_CLIENT_ID)
    secret = known.get("client_secret")
    if client is None or not (isinstance(secret, str) and client.check_client_secret(secret)):
        secret = secrets.token_urlsafe(32)
    _upsert_client(
        session,
        DEV_CLIENT_ID,
        client_name="Portico development client",
        client_secret_hash=secret_digest(secret),
        token_endpoint_auth_method="client_secret_basic",
        grant_types="client_credentials authorization_code refresh_token",
        response_types="code",
        redirect_uris=" ".join(redirect_uris),
        scope=DEV_SCOPE,
    )
    _upsert_client(
        session,
        PUBLIC_CLIENT_ID,
        client_name="Portico public client (PKCE)",
        client_secret_hash=None,
        token_endpoint_auth_method="none",
        grant_types="authorization_code refresh_token",
        response_types="code",
        redirect_uris=" ".join(redirect_uris),
        scope=DEV_SCOPE,
    )

    users = SqlUserRepository(session)
    user = find_user(users, DEMO_USERNAME)
    password = known.get("password")
    if not isinstance(password, str) or not password:
        password = secrets.token_urlsafe(12)
    if user is None:
        register(
            users, passwords, username=DEMO_USERNAME, email="demo@example.com", password=password
        )
    elif not passwords.verify(user.password_hash, password):
        password = secrets.token_urlsafe(12)
        user.password_hash = passwords.hash(password)

    credentials = {
        "client_id": DEV_CLIENT_ID,
        "client_secret": secret,
        "username": DEMO_USERNAME,
        "password": password,
        "public_client_id": PUBLIC_CLIENT_ID,
        "redirect_uri": DEV_REDIRECT_URI,
        "scope": DEV_SCOPE,
    }
    session.flush()
    return credentials, known != credentials


def seed_orders_client(
    session: Session, client_file: str | Path = ORDERS_CLIENT_FILE
) -> tuple[dict[str, str], bool]:
    """Create or repair the confidential client the orders service gets its service token with
    (client_credentials only). Like `seed_dev`, a secret in `client_file` that still matches is
    kept; the caller commits, then writes the file with `write_credentials` when told to.
    """
    return _seed_service_client(
        session, ORDERS_CLIENT_ID, "Portico orders service", ORDERS_SCOPE, client_file
    )


def seed_views_client(
    session: Session, client_file: str | Path = VIEWS_CLIENT_FILE
) -> tuple[dict[str, str], bool]:
    """The same for the read side's client: it reads orders' history feed (`orders:events`)."""
    return _seed_service_client(
        session, VIEWS_CLIENT_ID, "Portico views (read side)", VIEWS_SCOPE, client_file
    )


def _seed_service_client(
    session: Session, client_id: str, name: str, scope: str, client_file: str | Path
) -> tuple[dict[str, str], bool]:
    known = _read_credentials(Path(client_file))
    client = session.get(Client, client_id)
    secret = known.get("client_secret")
    if client is None or not (isinstance(secret, str) and client.check_client_secret(secret)):
        secret = secrets.token_urlsafe(32)
    _upsert_client(
        session,
        client_id,
        client_name=name,
        client_secret_hash=secret_digest(secret),
        token_endpoint_auth_method="client_secret_basic",
        grant_types="client_credentials",
        response_types="",
        redirect_uris="",
        scope=scope,
    )
    session.flush()
    credentials = {"client_id": client_id, "client_secret": secret}
    return credentials, known != credentials


def write_credentials(path: str | Path, credentials: dict[str, str]) -> None:
    """Written only after the seed is committed, so the file never names a missing secret."""
    write_private(path, (json.dumps(credentials, indent=2) + "\n").encode())
