"""`/internal/v1/api-keys`: what the gateway needs to accept API keys (ADR 0036).

Only the gateway calls these, with the shared secret `IDENTITY_INTERNAL_SECRET` in
`X-Internal-Token` (compared in constant time). Unset, or a wrong secret: 404, as if there were
no such endpoint; no secret sent at all: 401, so a gateway missing its setting is easy to spot.

* `GET /internal/v1/api-keys`: every key's id, digest, scopes, class, subject, version and
  revoked flag: the gateway's cache, refreshed every few seconds, so no request costs a call.
* `POST /internal/v1/api-keys/token`: the key itself in `X-API-Key`, checked here again, is
  exchanged for an RFC 9068 access token (`sub` the owner, the key's scopes, capped by the
  owner's role now) that the gateway forwards upstream, where services verify it as any token.
"""

from __future__ import annotations

import hmac
import secrets
import time
from typing import Any

from flask import Blueprint, Response, jsonify, request
from joserfc import jwt

from chassis import Problem

from ..adapters.orm import ApiKey, Client, User
from ..domain import roles
from ..service_layer import api_keys
from .deps import db, deps

__all__ = ["INTERNAL_HEADER", "bp", "mint_token"]

bp = Blueprint("internal", __name__, url_prefix="/internal/v1/api-keys")
INTERNAL_HEADER = "X-Internal-Token"
_MAX_KEY = 128  # a key is 63 characters; anything longer is not one


def _require_gateway() -> None:
    expected = deps().settings.internal_secret
    given = request.headers.get(INTERNAL_HEADER, "")
    if not expected:
        raise Problem(404, "not found")
    if not given:
        raise Problem(401, f"{INTERNAL_HEADER} is required")
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise Problem(404, "not found")


@bp.get("")
def list_keys() -> Response:
    """Every API key as the gateway caches it.
    ---
    get:
      operationId: listApiKeysInternal
      summary: Every API key's id, SHA-256 digest, scopes, class, subject, version (gateway only)
      tags: [internal]
      security: []
      parameters:
        - {in: header, name: X-Internal-Token, required: true, schema: {type: string}}
      responses:
        200:
          description: The keys (revoked ones flagged)
          content: {application/json: {schema: {type: object}}}
        401: Unauthorized
        404: NotFound
    """
    _require_gateway()
    return jsonify({"keys": api_keys.feed(db()), "generated_at": time.time()})


def _scope_now(row: ApiKey) -> str:
    """The key's scopes its owner may still hold; "" when the owner is gone."""
    session = db()
    if row.owner_kind == "user":
        user = session.get(User, row.subject)
        return roles.cap_scope(user.role, row.scope) if user is not None else ""
    client = session.get(Client, row.subject)
    return client.get_allowed_scope(row.scope) if client is not None else ""


def mint_token(row: ApiKey, scope: str, now: int | None = None) -> tuple[str, int]:
    """An RFC 9068 access token for the key's owner, as the token endpoint makes them."""
    settings = deps().settings
    now = int(time.time()) if now is None else now
    ttl = settings.api_key_token_ttl
    claims: dict[str, Any] = {
        "iss": settings.tokens.issuer,
        "aud": settings.tokens.audience,
        "sub": row.subject,
        "client_id": row.subject if row.owner_kind == "client" else f"apikey:{row.id}",
        "scope": scope,
        "iat": now,
        "exp": now + ttl,
        "jti": secrets.token_urlsafe(16),
        "api_key": row.id,
    }
    token = jwt.encode({"alg": "RS256", "typ": "at+jwt"}, claims, deps().keystore.signer())
    return token, ttl


@bp.post("/token")
def exchange() -> Response:
    """An API key exchanged for a short-lived access token.
    ---
    post:
      operationId: exchangeApiKeyInternal
      summary: The key in X-API-Key for an RFC 9068 access token (gateway only)
      tags: [internal]
      security: []
      parameters:
        - {in: header, name: X-Internal-Token, required: true, schema: {type: string}}
        - {in: header, name: X-API-Key, required: true, schema: {type: string}}
      responses:
        200:
          description: The token, its lifetime, and the key's version
          content: {application/json: {schema: {type: object}}}
        401: Unauthorized
        404: NotFound
    """
    _require_gateway()
    value = request.headers.get("X-API-Key", "")
    row = api_keys.authenticate(db(), value) if len(value) <= _MAX_KEY else None
    scope = _scope_now(row) if row is not None else ""
    if row is None or not scope:
        raise Problem(401, "the API key is invalid", title="Unauthorized")
    token, ttl = mint_token(row, scope)
    return jsonify(
        {"access_token": token, "token_type": "Bearer", "expires_in": ttl, "version": row.version}
    )
