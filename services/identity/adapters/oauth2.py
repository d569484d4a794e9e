"""Authlib's authorization server, wired to identity's tables and key file.

What Authlib provides is used as is: the grants (client_credentials, authorization_code,
refresh_token), PKCE (RFC 7636), client authentication, RFC 9068 JWT access tokens
(`JWTBearerTokenGenerator`) and their introspection (`JWTIntrospectionEndpoint`). What is
added here:

* PKCE is S256 only (`plain` is refused) and mandatory for every client, confidential ones
  too (RFC 9700 section 2.1.1);
* authorization codes and refresh tokens are single-use even under concurrent requests (an
  atomic delete / update whose row count decides; the loser gets `invalid_grant`);
* a replayed code or a reused (already rotated) refresh token is taken as a sign of theft: the
  whole token family - every token descended from the same authorization code - is revoked
  (RFC 6749 section 4.1.2, RFC 9700 section 4.14.2). The server cannot tell the thief from the
  legitimate client, so both must sign in again;
* JWT access tokens can be revoked (RFC 7009): Authlib's `JWTRevocationEndpoint` refuses that,
  so revocation looks tokens up by digest and records the revoked `jti`, which introspection
  then reports as inactive.

Errors from these endpoints are RFC 6749 JSON (`{"error": ...}`), as OAuth requires.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NoReturn

import jwt
from authlib.integrations.flask_oauth2 import AuthorizationServer
from authlib.oauth2.rfc6749 import InvalidGrantError, InvalidRequestError, grants
from authlib.oauth2.rfc6749.errors import InvalidScopeError
from authlib.oauth2.rfc7009 import RevocationEndpoint
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7636.challenge import compare_s256_code_challenge
from authlib.oauth2.rfc7662 import IntrospectionEndpoint
from authlib.oauth2.rfc9068 import JWTBearerTokenGenerator, JWTIntrospectionEndpoint
from flask import Flask
from joserfc.jwk import KeySet
from sqlalchemy import ColumnElement, delete, or_, select, update
from sqlalchemy.orm import Session

from ..domain import roles, scopes
from ..domain.passwords import secret_digest
from ..settings import IdentitySettings
from .keystore import KeyStore
from .orm import AuthorizationCode, Client, SpentAuthorizationCode, Token, TokenFamily, User

__all__ = ["PorticoAuthorizationServer", "build_server"]

SECRET_AUTH = ["client_secret_basic", "client_secret_post"]
ANY_AUTH = [*SECRET_AUTH, "none"]
REPLAYED_CODE = "The authorization code was already used; the tokens issued from it are revoked."
REUSED_REFRESH = "The refresh token was already used; its token family is revoked."


class PorticoAuthorizationServer(AuthorizationServer):
    """Authlib's Flask server, carrying what the grants and endpoints need."""

    def __init__(self, settings: IdentitySettings, keystore: KeyStore, db: Callable[[], Session]):
        super().__init__()
        self.settings = settings
        self.keystore = keystore
        self.db = db


def _db(grant: Any) -> Session:
    return grant.server.db()  # type: ignore[no-any-return]


def family_of(session: Session, token: Token) -> str:
    """The family a token belongs to: the digest of the authorization code that started it, or,
    for a token issued before families were recorded, its own `jti` (a family of its own).
    """
    family = session.scalar(select(TokenFamily.family_id).where(TokenFamily.token_jti == token.jti))
    return family or token.jti


def _in_family(family_id: str) -> ColumnElement[bool]:
    members = select(TokenFamily.token_jti).where(TokenFamily.family_id == family_id)
    return or_(Token.jti.in_(members), Token.jti == family_id)


def revoke_family(session: Session, family_id: str) -> None:
    """Revoke every access and refresh token of a family (not committed)."""
    session.execute(
        update(Token)
        .where(_in_family(family_id))
        .values(access_revoked=True, refresh_revoked=True)
        .execution_options(synchronize_session=False)
    )


def _refuse_replay(session: Session, family_id: str, description: str) -> NoReturn:
    """Answer a replay with `invalid_grant` after revoking its family. The revocation is
    committed here because the endpoint commits only successful answers; whatever this request
    had written (a token about to be issued to the replay) is rolled back first. Under
    PostgreSQL the replay's write waited for the winner's commit, so the winner's tokens are
    visible to the revocation and revoked too.
    """
    session.rollback()
    revoke_family(session, family_id)
    session.commit()
    raise InvalidGrantError(description)


class TokenGenerator(JWTBearerTokenGenerator):
    """RFC 9068 access tokens signed with the key file's active key (its `kid` in the header)."""

    def __init__(self, settings: IdentitySettings, keystore: KeyStore) -> None:
        ttl = settings.access_token_ttl
        super().__init__(
            issuer=settings.tokens.issuer,
            alg="RS256",
            refresh_token_generator=lambda **_: secrets.token_urlsafe(32),
            expires_generator=lambda client, grant_type: ttl,
        )
        self.audience = settings.tokens.audience
        self.keystore = keystore

    def get_jwks(self) -> KeySet:
        return self.keystore.signer()

    def generate(
        self,
        grant_type: str,
        client: Any,
        user: Any = None,
        scope: str | None = None,
        expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:
        """A user token carries requested ∩ client's ∩ role's scopes (ADR 0009). Every grant
        comes through here (code exchange and refresh too), so a demoted user's next refresh
        loses what the new role may not hold. Never empty: Authlib reads no scope as "all".
        """
        if user is not None:
            scope = roles.cap_scope(user.role, client.get_allowed_scope(scope))
            if not scope:
                raise InvalidScopeError("none of the requested scopes can be granted to this user")
        return super().generate(  # type: ignore[no-any-return]
            grant_type, client, user, scope, expires_in, include_refresh_token
        )

    def get_audiences(self, client: Any, user: Any, scope: Any) -> str:
        return self.audience

    def get_jti(self, client: Any, grant_type: Any, user: Any, scope: Any) -> str:
        return secrets.token_urlsafe(16)


class S256CodeChallenge(CodeChallenge):
    """PKCE with S256 only, for every client from the authorization request on: a client
    secret does not stop an injected stolen code, PKCE does (RFC 9700 section 2.1.1).
    """

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    CODE_CHALLENGE_METHODS = {"S256": compare_s256_code_challenge}

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        challenge, method = data.get("code_challenge"), data.get("code_challenge_method")
        if not challenge:
            raise InvalidRequestError("A PKCE 'code_challenge' (S256) is required.")
        if method != "S256":
            raise InvalidRequestError("'code_challenge_method' must be S256.")
        super().validate_code_challenge(grant, redirect_uri)

    def validate_code_verifier(self, grant: Any, result: Any) -> None:
        # A code issued without a challenge (before PKCE was required) is not exchanged.
        if not self.get_authorization_code_challenge(grant.request.authorization_code):
            raise InvalidGrantError("The authorization code was issued without PKCE.")
        super().validate_code_verifier(grant, result)


class ClientCredentialsGrant(grants.ClientCredentialsGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = SECRET_AUTH


class AuthorizationCodeGrant(grants.AuthorizationCodeGrant):
    TOKEN_ENDPOINT_AUTH_METHODS = ANY_AUTH

    def save_authorization_code(self, code: str, request: Any) -> None:
        data = request.payload.data
        _db(self).add(
            AuthorizationCode(
                code_hash=secret_digest(code),
                client_id=request.client.get_client_id(),
                user_id=request.user.get_user_id(),
                redirect_uri=request.payload.redirect_uri or "",
                scope=roles.cap_scope(request.user.role, request.scope),  # what the token gets
                code_challenge=data.get("code_challenge"),
                code_challenge_method=data.get("code_challenge_method"),
                expires_at=time.time() + self.server.settings.authorization_code_ttl,
            )
        )

    def query_authorization_code(self, code: str, client: Client) -> AuthorizationCode | None:
        session, digest = _db(self), secret_digest(code)
        item = session.get(AuthorizationCode, digest)
        if item is None and session.get(SpentAuthorizationCode, digest) is not None:
            _refuse_replay(session, digest, REPLAYED_CODE)
        if item and item.client_id == client.client_id and item.expires_at > time.time():
            return item
        return None

    def delete_authorization_code(self, authorization_code: AuthorizationCode) -> None:
        """Spend the code: exactly one exchange deletes it; a concurrent one is a replay."""
        session, digest = _db(self), authorization_code.code_hash
        result = session.execute(
            delete(AuthorizationCode).where(AuthorizationCode.code_hash == digest)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            _refuse_replay(session, digest, REPLAYED_CODE)
        now = time.time()
        # A spent code is remembered as long as a refresh token issued from it may live.
        horizon = now - self.server.settings.refresh_token_ttl
        session.execute(
            delete(SpentAuthorizationCode).where(SpentAuthorizationCode.spent_at < horizon)
        )
        session.add(
            SpentAuthorizationCode(
                code_hash=digest, client_id=authorization_code.client_id, spent_at=now
            )
        )

    def authenticate_user(self, authorization_code: AuthorizationCode) -> User | None:
        return _db(self).get(User, authorization_code.user_id)


class RefreshTokenGrant(grants.RefreshTokenGrant):
    """Rotation: every use returns a new refresh token and spends the old one. Presenting a
    spent (or revoked) refresh token revokes its whole family.
    """

    TOKEN_ENDPOINT_AUTH_METHODS = ANY_AUTH
    INCLUDE_NEW_REFRESH_TOKEN = True

    def authenticate_refresh_token(self, refresh_token: str) -> Token | None:
        token = (
            _db(self)
            .scalars(select(Token).where(Token.refresh_token_hash == secret_digest(refresh_token)))
            .first()
        )
        if token is not None and token.refresh_revoked:
            _refuse_replay(_db(self), family_of(_db(self), token), REUSED_REFRESH)
        if token is not None and token.refresh_usable(time.time()):
            return token
        return None

    def authenticate_user(self, refresh_token: Token) -> User | None:
        return _db(self).get(User, refresh_token.user_id) if refresh_token.user_id else None

    def revoke_old_credential(self, refresh_token: Token) -> None:
        result = _db(self).execute(
            update(Token)
            .where(Token.id == refresh_token.id, Token.refresh_revoked.is_(False))
            .values(refresh_revoked=True)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]  # a concurrent use won
            _refuse_replay(_db(self), family_of(_db(self), refresh_token), REUSED_REFRESH)


def _save_token(db: Callable[[], Session], settings: IdentitySettings) -> Callable[..., None]:
    def save_token(token: dict[str, Any], request: Any) -> None:
        # Our own, freshly signed token: its claims are read, not verified, to index it.
        claims = jwt.decode(token["access_token"], options={"verify_signature": False})
        refresh = token.get("refresh_token")
        user = getattr(request, "user", None)
        session = db()
        family = _new_token_family(session, request)
        session.add(
            Token(
                client_id=request.client.get_client_id(),
                user_id=user.get_user_id() if user else None,
                scope=token.get("scope", ""),
                jti=claims["jti"],
                access_token_hash=secret_digest(token["access_token"]),
                issued_at=float(claims["iat"]),
                access_expires_at=float(claims["exp"]),
                refresh_token_hash=secret_digest(refresh) if refresh else None,
                refresh_expires_at=claims["iat"] + settings.refresh_token_ttl if refresh else None,
            )
        )
        if family is not None:
            session.add(TokenFamily(token_jti=claims["jti"], family_id=family))

    return save_token


def _new_token_family(session: Session, request: Any) -> str | None:
    """The family of a token being issued: its code's digest, its parent refresh token's
    family, or none (client_credentials: no refresh token, nothing to replay).
    """
    code = getattr(request, "authorization_code", None)
    if isinstance(code, AuthorizationCode):
        return code.code_hash
    parent = getattr(request, "refresh_token", None)
    if isinstance(parent, Token):
        return family_of(session, parent)
    return None


class AccessTokenIntrospection(JWTIntrospectionEndpoint):
    """RFC 7662 for JWT access tokens: signature and claims by Authlib, revocation from the DB.
    Any confidential client (a resource server) may introspect access tokens.
    """

    CLIENT_AUTH_METHODS = SECRET_AUTH

    def __init__(self, server: PorticoAuthorizationServer) -> None:
        super().__init__(issuer=server.settings.tokens.issuer, server=server)

    def get_jwks(self) -> KeySet:
        return KeySet.import_key_set(self.server.keystore.jwks())

    def check_permission(self, token: Any, client: Any, request: Any) -> bool:
        return True

    def create_introspection_payload(self, token: Any) -> dict[str, Any]:
        if token:
            record = (
                self.server.db().scalars(select(Token).where(Token.jti == token["jti"])).first()
            )
            # Unknown to the database (never issued, or the database was reset): not active.
            if record is None or record.access_revoked:
                return {"active": False}
        payload: dict[str, Any] = super().create_introspection_payload(token)
        if payload.get("active"):
            payload["jti"] = token["jti"]
        return payload

    def get_username(self, user_id: str) -> str | None:
        user = self.server.db().get(User, user_id)
        return user.username if user else None


class RefreshTokenIntrospection(IntrospectionEndpoint):
    """RFC 7662 for refresh tokens (and the last stop: anything unknown is inactive). A refresh
    token is only described to the client it was issued to.
    """

    CLIENT_AUTH_METHODS = SECRET_AUTH

    def query_token(self, token_string: str, token_type_hint: str | None) -> Token | None:
        if token_type_hint == "access_token":
            return None  # not a valid JWT of ours, or the JWT endpoint would have answered
        return (
            self.server.db()
            .scalars(select(Token).where(Token.refresh_token_hash == secret_digest(token_string)))
            .first()
        )

    def check_permission(self, token: Token, client: Any, request: Any) -> bool:
        return token.check_client(client)

    def create_introspection_payload(self, token: Token | None) -> dict[str, Any]:
        if token is None or not token.refresh_usable(time.time()):
            return {"active": False}
        settings = self.server.settings
        payload: dict[str, Any] = {
            "active": True,
            "token_type": "refresh_token",
            "client_id": token.client_id,
            "scope": token.scope,
            "sub": token.user_id or token.client_id,
            "iss": settings.tokens.issuer,
            "iat": int(token.issued_at),
            "exp": int(token.refresh_expires_at or 0),
        }
        user = self.server.db().get(User, token.user_id) if token.user_id else None
        if user:
            payload["username"] = user.username
        return payload


@dataclass
class _Found:
    token: Token
    kind: str  # "access_token" | "refresh_token"

    def check_client(self, client: Any) -> bool:
        return self.token.check_client(client)


class Revocation(RevocationEndpoint):
    """RFC 7009 for access and refresh tokens; public clients revoke their own tokens too.
    Revoking a refresh token revokes every token of its family, as RFC 7009 section 2.1 asks
    ("all access tokens based on the same authorization grant"): signing out ends the sign-in.
    """

    CLIENT_AUTH_METHODS = ANY_AUTH

    def query_token(self, token_string: str, token_type_hint: str | None) -> _Found | None:
        digest = secret_digest(token_string)
        columns = {
            "access_token": Token.access_token_hash,
            "refresh_token": Token.refresh_token_hash,
        }
        order = ["access_token", "refresh_token"]
        if token_type_hint == "refresh_token":
            order.reverse()
        for kind in order:  # the hint is only a hint (RFC 7009 section 2.1)
            token = self.server.db().scalars(select(Token).where(columns[kind] == digest)).first()
            if token is not None:
                return _Found(token, kind)
        return None

    def revoke_token(self, token: _Found, request: Any) -> None:
        token.token.access_revoked = True
        if token.kind == "refresh_token":
            token.token.refresh_revoked = True
            revoke_family(self.server.db(), family_of(self.server.db(), token.token))


def build_server(
    app: Flask, settings: IdentitySettings, keystore: KeyStore, db: Callable[[], Session]
) -> PorticoAuthorizationServer:
    app.config["OAUTH2_SCOPES_SUPPORTED"] = list(scopes.SUPPORTED)
    server = PorticoAuthorizationServer(settings, keystore, db)
    server.init_app(
        app, query_client=lambda cid: db().get(Client, cid), save_token=_save_token(db, settings)
    )
    server.register_token_generator("default", TokenGenerator(settings, keystore))
    server.register_grant(ClientCredentialsGrant)
    server.register_grant(AuthorizationCodeGrant, [S256CodeChallenge(required=True)])
    server.register_grant(RefreshTokenGrant)
    server.register_endpoint(AccessTokenIntrospection(server))
    server.register_endpoint(RefreshTokenIntrospection(server))
    server.register_endpoint(Revocation(server))
    return server
