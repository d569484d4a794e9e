"""Identity's tables (SQLAlchemy 2), shaped as Authlib's client, code and token models.

Secrets are never stored: client secrets, authorization codes and refresh tokens are kept as
SHA-256 digests, access tokens as their digest and `jti`. Times are epoch seconds (floats) so
that comparisons read the same on SQLite and PostgreSQL.

Every change to these tables is an Alembic revision in services/identity/migrations (ADR 0019).
"""

from __future__ import annotations

import time

from authlib.oauth2.rfc6749 import AuthorizationCodeMixin, ClientMixin, TokenMixin
from authlib.oauth2.rfc6749.util import list_to_scope, scope_to_list
from sqlalchemy import Boolean, Float, ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from ..domain.passwords import secret_matches

__all__ = [
    "ApiKey",
    "AuthorizationCode",
    "Base",
    "Client",
    "LoginFailure",
    "RegistrationAttempt",
    "SpentAuthorizationCode",
    "Token",
    "TokenFamily",
    "User",
]


class Base(DeclarativeBase):
    pass


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)  # stored lower-cased
    email: Mapped[str] = mapped_column(String(254))
    password_hash: Mapped[str] = mapped_column(String(255))
    # domain.roles.Role; caps the scopes of every token issued to this user
    role: Mapped[str] = mapped_column(String(16), default="customer", server_default="customer")
    created_at: Mapped[float] = mapped_column(Float, default=time.time)

    def get_user_id(self) -> str:
        return self.id


class Client(Base, ClientMixin):
    __tablename__ = "oauth_clients"

    client_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_secret_hash: Mapped[str | None] = mapped_column(String(64))
    # The secret before the last rotation: it keeps working until retired, so that a client's
    # deployments can switch to the new one without a moment where neither works.
    previous_client_secret_hash: Mapped[str | None] = mapped_column(String(64))
    client_name: Mapped[str] = mapped_column(String(128))
    # "none" makes a public client (no secret, PKCE S256 mandatory); confidential clients
    # authenticate with client_secret_basic or client_secret_post.
    token_endpoint_auth_method: Mapped[str] = mapped_column(String(32))
    grant_types: Mapped[str] = mapped_column(Text)  # space-separated
    response_types: Mapped[str] = mapped_column(Text, default="code")
    redirect_uris: Mapped[str] = mapped_column(Text, default="")  # space-separated
    scope: Mapped[str] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)

    @property
    def is_public(self) -> bool:
        return self.token_endpoint_auth_method == "none"

    def get_client_id(self) -> str:
        return self.client_id

    def get_default_redirect_uri(self) -> str | None:
        uris = self.redirect_uris.split()
        return uris[0] if uris else None

    def get_allowed_scope(self, scope: str | None) -> str:
        """The requested scopes this client may have; all of its scopes when none are asked."""
        allowed = scope_to_list(self.scope) or []
        if not scope:
            return list_to_scope(allowed)
        return list_to_scope([s for s in scope_to_list(scope) or [] if s in allowed])

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.redirect_uris.split()  # exact string match, no prefixes

    def check_client_secret(self, client_secret: str) -> bool:
        current = secret_matches(self.client_secret_hash, client_secret)
        previous = secret_matches(self.previous_client_secret_hash, client_secret)
        return current or previous  # both compared: the time does not tell which one matched

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        if self.is_public:
            return method == "none"
        return method in ("client_secret_basic", "client_secret_post")

    def check_response_type(self, response_type: str) -> bool:
        return response_type in self.response_types.split()

    def check_grant_type(self, grant_type: str) -> bool:
        return grant_type in self.grant_types.split()


class AuthorizationCode(Base, AuthorizationCodeMixin):
    __tablename__ = "oauth_authorization_codes"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("oauth_clients.client_id"))
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"))
    redirect_uri: Mapped[str] = mapped_column(Text, default="")
    scope: Mapped[str] = mapped_column(Text, default="")
    code_challenge: Mapped[str | None] = mapped_column(String(128))
    code_challenge_method: Mapped[str | None] = mapped_column(String(8))
    expires_at: Mapped[float] = mapped_column(Float)

    def get_redirect_uri(self) -> str:
        return self.redirect_uri

    def get_scope(self) -> str:
        return self.scope


class Token(Base, TokenMixin):
    """One issued access token and, for user grants, its refresh token."""

    __tablename__ = "oauth_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    client_id: Mapped[str] = mapped_column(ForeignKey("oauth_clients.client_id"), index=True)
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    scope: Mapped[str] = mapped_column(Text, default="")
    jti: Mapped[str] = mapped_column(String(64), unique=True)
    access_token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    issued_at: Mapped[float] = mapped_column(Float)
    access_expires_at: Mapped[float] = mapped_column(Float)
    access_revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    refresh_token_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    refresh_expires_at: Mapped[float | None] = mapped_column(Float)
    refresh_revoked: Mapped[bool] = mapped_column(Boolean, default=False)

    def check_client(self, client: ClientMixin) -> bool:
        return self.client_id == client.get_client_id()

    def get_scope(self) -> str:
        return self.scope

    def get_expires_in(self) -> int:
        return int(self.access_expires_at - self.issued_at)

    def is_expired(self) -> bool:
        return self.access_expires_at <= time.time()

    def is_revoked(self) -> bool:
        return self.access_revoked

    def refresh_usable(self, now: float) -> bool:
        return (
            self.refresh_token_hash is not None
            and not self.refresh_revoked
            and (self.refresh_expires_at or 0) > now
        )


class LoginFailure(Base):
    """Failed logins, in the database so that every gunicorn worker sees the same count."""

    __tablename__ = "login_failures"
    __table_args__ = (Index("ix_login_failures_key", "username", "ip", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(64))
    ip: Mapped[str] = mapped_column(String(64))
    at: Mapped[float] = mapped_column(Float)


# The tables below shipped after the first release; the baseline revision has them all.


class TokenFamily(Base):
    """The grant each user token descends from (RFC 9700 section 4.14.2): the tokens issued
    from one authorization code and every rotation of their refresh token share a family, so
    that a replayed code or a reused refresh token can revoke all of them at once.
    """

    __tablename__ = "oauth_token_families"

    token_jti: Mapped[str] = mapped_column(ForeignKey("oauth_tokens.jti"), primary_key=True)
    # For a family started by an authorization code: that code's digest.
    family_id: Mapped[str] = mapped_column(String(64), index=True)


class SpentAuthorizationCode(Base):
    """Digests of exchanged codes, kept so that a replay is recognised (and its tokens
    revoked, RFC 6749 section 4.1.2) rather than looking like an unknown code.
    """

    __tablename__ = "oauth_spent_codes"

    code_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    client_id: Mapped[str] = mapped_column(String(64))
    spent_at: Mapped[float] = mapped_column(Float, index=True)


class RegistrationAttempt(Base):
    """Self-registrations per client address, in the database so every worker counts them."""

    __tablename__ = "registration_attempts"
    __table_args__ = (Index("ix_registration_attempts_key", "ip", "at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    ip: Mapped[str] = mapped_column(String(64))
    at: Mapped[float] = mapped_column(Float)


class ApiKey(Base):
    """An API key (ADR 0036): `pk_<id>_<secret>` is shown once; only the secret's SHA-256
    digest is kept. `version` grows with every rotation and revocation, so the gateway's cache
    can tell a changed key from the one it holds."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    owner_kind: Mapped[str] = mapped_column(String(8))  # "user" or "client"
    # The token subject: a user's id, or a client's client_id
    subject: Mapped[str] = mapped_column(String(64), index=True)
    owner_name: Mapped[str] = mapped_column(String(64))  # the username or client id given
    secret_hash: Mapped[str] = mapped_column(String(64))
    scope: Mapped[str] = mapped_column(Text)  # space-separated, capped at creation
    rate_class: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer, default=1)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[float] = mapped_column(Float, default=time.time)
    rotated_at: Mapped[float | None] = mapped_column(Float)
    revoked_at: Mapped[float | None] = mapped_column(Float)
