"""identity as a provider: clients and users through identity's own setup and user code,
user tokens issued by its own OAuth2 server (so `/users/me` finds the token it issued)."""

from __future__ import annotations

from types import SimpleNamespace

from sqlalchemy.orm import Session

from chassis import TokenSettings, create_db_engine, sqlite_url
from services.identity.adapters.orm import ApiKey, Client
from services.identity.adapters.repository import SqlUserRepository
from services.identity.app import create_app
from services.identity.domain.passwords import Passwords, secret_digest
from services.identity.entrypoints.deps import db, deps
from services.identity.service_layer.setup import (
    DEV_CLIENT_ID,
    _upsert_client,
    init_storage,
    seed_dev,
    seed_orders_client,
    seed_views_client,
)
from services.identity.service_layer.users import find_user, register
from services.identity.settings import IdentitySettings

from ..consumers.apikeys import INTERNAL_SECRET, KEY_ID, KEY_SECRET
from ..harness import serve_wsgi
from . import Context, Provider


def start(ctx: Context) -> Provider:
    settings = IdentitySettings(
        database_url=sqlite_url(ctx.workdir / "identity.db"),
        keys_file=str(ctx.workdir / "signing-keys.json"),
        secret_key_file=str(ctx.workdir / "secret-key"),
        key_activation_delay=0.0,
        internal_secret=INTERNAL_SECRET,
        tokens=TokenSettings(
            issuer="http://gateway.contract", audience="portico-api", jwks_url="http://unused/"
        ),
    )
    engine = create_db_engine(settings.database_url)
    init_storage(settings, engine)
    with Session(engine) as session:
        seed_dev(session, Passwords(), settings, ctx.workdir / "dev-credentials.json")
        session.commit()
    engine.dispose()
    app = create_app(settings)
    ext = deps(app)

    def client_secret(client_id: str = DEV_CLIENT_ID, secret: str = "contract-secret") -> None:
        with ext.sessions() as session:
            _upsert_client(session, client_id, client_secret_hash=secret_digest(secret))
            session.commit()

    def orders_client(secret: str = "contract-secret") -> None:
        """The orders service's client as `init` seeds it, with a secret the pact knows."""
        with ext.sessions() as session:
            credentials, _ = seed_orders_client(session, ctx.workdir / "orders-client.json")
            _upsert_client(
                session, credentials["client_id"], client_secret_hash=secret_digest(secret)
            )
            session.commit()

    def views_client(secret: str = "contract-secret") -> None:
        """The read side's client as `init` seeds it, with a secret the pact knows."""
        with ext.sessions() as session:
            credentials, _ = seed_views_client(session, ctx.workdir / "views-client.json")
            _upsert_client(
                session, credentials["client_id"], client_secret_hash=secret_digest(secret)
            )
            session.commit()

    def user_signed_in(username: str = "alice", scope: str = "profile") -> None:
        with app.app_context():
            session = db()
            users = SqlUserRepository(session)
            user = find_user(users, username) or register(
                users,
                ext.passwords,
                username=username,
                email=f"{username}@example.com",
                password="correct horse battery",
            )
            client = session.get(Client, DEV_CLIENT_ID)
            token = ext.server.generate_token(
                "authorization_code", client, user=user, scope=scope, include_refresh_token=False
            )
            ext.server.save_token(token, SimpleNamespace(client=client, user=user))
            session.commit()
        ctx.bearer["token"] = token["access_token"]

    def api_key(username: str = "alice") -> None:
        """The contract's key (`contracts.consumers.apikeys`), for a user who holds `profile`."""
        with app.app_context():
            session = db()
            users = SqlUserRepository(session)
            user = find_user(users, username) or register(
                users,
                ext.passwords,
                username=username,
                email=f"{username}@example.com",
                password="correct horse battery",
            )
            row = ApiKey(
                id=KEY_ID,
                name="contract",
                owner_kind="user",
                subject=user.id,
                owner_name=username,
                secret_hash=secret_digest(KEY_SECRET),
                scope="profile",
                rate_class="authenticated",
                version=1,
                revoked=False,
                created_at=0.0,
            )
            session.merge(row)
            session.commit()

    backend = serve_wsgi(app)
    states = {
        "a client with a known secret": client_secret,
        "the orders service client exists": orders_client,
        "the views service client exists": views_client,
        "a user is signed in": user_signed_in,
        "an API key exists": api_key,
    }
    return Provider("identity", backend, states, close=ext.engine.dispose)
