"""The identity app factory: `gunicorn 'services.identity.app:create_app()'`.

Every worker builds the same app from the same files: the database, the signing key file
(re-read when it changes) and the secret key file, so any worker can finish a login another
worker started and verify tokens any worker signed.
"""

from __future__ import annotations

from flask import Flask, g
from sqlalchemy.orm import sessionmaker
from werkzeug.middleware.proxy_fix import ProxyFix

from chassis import TokenVerifier, configure_logging, create_db_engine, ping, tracing
from chassis.deps import provide
from chassis.flask import install
from chassis.migrations import require_head
from chassis.openapi import install_flask

from . import schemas
from .adapters.files import COMMON_PASSWORDS_FILE, read_lines, read_or_create_secret
from .adapters.oauth2 import build_server
from .domain.passwords import PasswordPolicy, Passwords
from .domain.throttle import Throttle
from .entrypoints import internal, oauth, users
from .entrypoints.deps import Deps, db
from .migrations import MIGRATIONS_DIR
from .service_layer.setup import keystore_for
from .settings import IdentitySettings

__all__ = ["create_app"]

_ERRORS = {
    "BadRequest": "The body is not valid JSON, or the authorization request (unknown client "
    "or redirect URI) or its form (CSRF token) is invalid",
    "Unauthorized": "The bearer token is missing, invalid or revoked (see WWW-Authenticate)",
    "Forbidden": "The token lacks the `profile` scope, or speaks for no user "
    "(type .../user-token-required)",
    "NotFound": "No such user (or not the caller's)",
    "Conflict": "The username is taken",
    "ContentTooLarge": "The body is larger than 64 KiB",
    "UnsupportedMediaType": "The body is not application/json",
    "UnprocessableContent": "Invalid fields, named in `errors`",
    "TooManyRequests": "Too many attempts from this address or for this username "
    "(Retry-After says when to try again)",
}


def create_app(settings: IdentitySettings | None = None) -> Flask:
    if settings is None:  # the serving path (gunicorn): never serve a stale schema
        settings = IdentitySettings.from_env()
        require_head("identity", MIGRATIONS_DIR, settings.database_url)
    configure_logging("identity")
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=settings.secret_key or read_or_create_secret(settings.secret_key_file),
        SESSION_COOKIE_NAME="portico_identity",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        SESSION_COOKIE_SECURE=settings.cookie_secure,
        # The CSRF token in the session is the protection; the Referer check of HTTPS requests
        # misfires behind the gateway and nginx, whose Host differs from the page's.
        WTF_CSRF_SSL_STRICT=False,
        MAX_CONTENT_LENGTH=64 * 1024,
    )
    engine = create_db_engine(settings.database_url)
    keystore = keystore_for(settings)
    # Identity checks its own tokens against its own key file: no HTTP round trip.
    verifier = TokenVerifier(settings.tokens.policy(), keystore.jwks, refetch_interval=1.0)
    install(
        app,
        "identity",
        ready_checks={"database": lambda: ping(engine), "signing_key": keystore.signing_key},
        verifier=verifier,
    )
    provide(
        app,
        Deps(
            settings=settings,
            engine=engine,
            sessions=sessionmaker(engine, expire_on_commit=False),
            keystore=keystore,
            passwords=Passwords(),
            throttle=Throttle(settings.login_max_failures, settings.login_window),
            server=build_server(app, settings, keystore, db),
            password_policy=PasswordPolicy.from_lines(read_lines(COMMON_PASSWORDS_FILE)),
            registrations=Throttle(settings.register_max_attempts, settings.register_window),
        ),
    )

    @app.teardown_appcontext
    def _close_session(_exc: BaseException | None) -> None:
        session = g.pop("db", None)
        if session is not None:
            session.close()  # rolls back whatever was not committed

    app.register_blueprint(oauth.bp)
    app.register_blueprint(users.bp)
    app.register_blueprint(internal.bp)
    install_flask(
        app,
        title="Portico identity",
        description="OAuth 2 authorization server (RFC 6749, 7636, 7662, 7009, 8414, 9068), "
        "the login + consent page, and users. The token, introspection and revocation "
        "endpoints answer errors in RFC 6749 JSON; everything else in problem+json.",
        security="RFC 9068 access token. Scope: profile (the caller's own user record).",
        schemas={
            "User": schemas.UserSchema,
            "Register": schemas.RegisterSchema,
            "TokenRequest": schemas.TokenRequestSchema,
            "TokenResponse": schemas.TokenResponseSchema,
            "OAuthError": schemas.OAuthErrorSchema,
            "IntrospectRequest": schemas.IntrospectRequestSchema,
            "Introspection": schemas.IntrospectionSchema,
            "RevokeRequest": schemas.RevokeRequestSchema,
            "Jwks": schemas.JwksSchema,
            "ServerMetadata": schemas.ServerMetadataSchema,
            "AuthorizeForm": schemas.AuthorizeFormSchema,
        },
        errors=_ERRORS,
    )
    if settings.proxy_count:
        n = settings.proxy_count
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n)  # type: ignore[method-assign]
    tracing.setup("identity", app)  # no-op unless PORTICO_TRACING is set
    return app
