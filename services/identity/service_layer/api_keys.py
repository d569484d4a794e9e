"""API keys (ADR 0036): create, list, rotate, revoke; the gateway's feed; a key's token.

A key reads `pk_<id>_<secret>`: `id` (16 hex digits) names the row, `secret` is 256 random bits
(base64url). Only `sha256(secret)` is stored: for a 256-bit secret a plain digest is as safe as
a keyed one, and the gateway can check keys with the digests alone (no pepper to share).

A key's scopes are capped like a token's: a user's by their role (ADR 0009), a client's by the
scopes it may ask for; asking for more is refused, naming what cannot be granted. Functions
take an open session and never commit (the caller owns the transaction).
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..adapters.orm import ApiKey, Client, User
from ..domain import roles, scopes
from ..domain.passwords import secret_digest, secret_matches

__all__ = [
    "PREFIX",
    "ApiKeyError",
    "IssuedKey",
    "authenticate",
    "create_key",
    "describe_key",
    "feed",
    "list_keys",
    "parse_key",
    "revoke_key",
    "rotate_key",
]

PREFIX = "pk"
_ID = re.compile(r"[0-9a-f]{16}\Z")
_SECRET = re.compile(r"[A-Za-z0-9_-]{43}\Z")
CLASS_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]{0,63}\Z")  # as gateway.yaml's policy names
MAX_NAME = 128


class ApiKeyError(Exception):
    """An API-key command that cannot be done as asked; the message says why."""


@dataclass(frozen=True)
class IssuedKey:
    """A key as shown once: the row and the whole key."""

    row: ApiKey
    key: str


def parse_key(value: str) -> tuple[str, str] | None:
    """(id, secret) of a well-formed key, else None (nothing about why)."""
    prefix, _, rest = value.partition("_")
    key_id, _, secret = rest.partition("_")
    if prefix != PREFIX or not _ID.match(key_id) or not _SECRET.match(secret):
        return None
    return key_id, secret


def _owner(session: Session, owner: str) -> tuple[str, str, str, frozenset[str]]:
    """(kind, subject, name, allowed scopes) of `user:<username>` or `client:<client_id>`."""
    kind, _, name = owner.partition(":")
    if kind == "user" and name:
        user = session.scalar(select(User).where(User.username == name.lower()))
        if user is None:
            raise ApiKeyError(f"no user {name}")
        return "user", user.id, user.username, roles.allowed_scopes(user.role)
    if kind == "client" and name:
        client = session.get(Client, name)
        if client is None:
            raise ApiKeyError(f"no client {name}")
        return "client", client.client_id, client.client_id, frozenset(client.scope.split())
    raise ApiKeyError("--owner must be user:<username> or client:<client_id>")


def _scopes(requested: str, allowed: frozenset[str], owner: str) -> str:
    wanted = list(dict.fromkeys(requested.split()))
    if not wanted:
        raise ApiKeyError("--scopes must name at least one scope")
    unknown = [s for s in wanted if s not in scopes.SUPPORTED]
    if unknown:
        raise ApiKeyError(f"unknown scopes: {' '.join(unknown)}")
    denied = [s for s in wanted if s not in allowed]
    if denied:
        raise ApiKeyError(f"{owner} may not hold: {' '.join(denied)}")
    return " ".join(wanted)


def _new_secret() -> str:
    return secrets.token_urlsafe(32)  # 256 bits, 43 characters


def create_key(
    session: Session, owner: str, scope: str, rate_class: str, name: str = ""
) -> IssuedKey:
    if not CLASS_NAME.match(rate_class):
        raise ApiKeyError("--class must be a rate-limit class name (letters, digits, '_-')")
    if len(name) > MAX_NAME:
        raise ApiKeyError(f"--name is longer than {MAX_NAME} characters")
    kind, subject, owner_name, allowed = _owner(session, owner)
    granted = _scopes(scope, allowed, owner)
    key_id, secret = secrets.token_hex(8), _new_secret()
    row = ApiKey(
        id=key_id,
        name=name,
        owner_kind=kind,
        subject=subject,
        owner_name=owner_name,
        secret_hash=secret_digest(secret),
        scope=granted,
        rate_class=rate_class,
        version=1,
        revoked=False,
        created_at=time.time(),
    )
    session.add(row)
    session.flush()
    return IssuedKey(row, f"{PREFIX}_{key_id}_{secret}")


def _get(session: Session, key_id: str) -> ApiKey:
    row = session.get(ApiKey, key_id) if _ID.match(key_id) else None
    if row is None:
        raise ApiKeyError(f"no API key {key_id}")
    return row


def rotate_key(session: Session, key_id: str) -> IssuedKey:
    """A new secret for the key; the old one stops working (at the gateway within its bound)."""
    row = _get(session, key_id)
    if row.revoked:
        raise ApiKeyError(f"API key {key_id} is revoked")
    secret = _new_secret()
    row.secret_hash = secret_digest(secret)
    row.version += 1
    row.rotated_at = time.time()
    session.flush()
    return IssuedKey(row, f"{PREFIX}_{row.id}_{secret}")


def revoke_key(session: Session, key_id: str) -> ApiKey:
    row = _get(session, key_id)
    if not row.revoked:
        row.revoked = True
        row.version += 1
        row.revoked_at = time.time()
        session.flush()
    return row


def describe_key(row: ApiKey) -> dict[str, Any]:
    """What `list` shows: never the secret or its digest."""
    return {
        "id": row.id,
        "name": row.name,
        "owner": f"{row.owner_kind}:{row.owner_name}",
        "scopes": row.scope.split(),
        "class": row.rate_class,
        "version": row.version,
        "revoked": row.revoked,
        "created_at": row.created_at,
        "rotated_at": row.rotated_at,
        "revoked_at": row.revoked_at,
    }


def list_keys(session: Session) -> list[dict[str, Any]]:
    rows = session.scalars(select(ApiKey).order_by(ApiKey.created_at, ApiKey.id))
    return [describe_key(r) for r in rows]


def feed(session: Session) -> list[dict[str, Any]]:
    """What the gateway caches (`GET /internal/v1/api-keys`): every key with its digest."""
    return [
        {
            "id": r.id,
            "hash": r.secret_hash,
            "scopes": r.scope.split(),
            "class": r.rate_class,
            "subject": r.subject,
            "client_id": r.subject if r.owner_kind == "client" else f"apikey:{r.id}",
            "version": r.version,
            "revoked": r.revoked,
        }
        for r in session.scalars(select(ApiKey).order_by(ApiKey.id))
    ]


def authenticate(session: Session, value: str) -> ApiKey | None:
    """The live key `value` names, its secret checked; None for anything else."""
    parsed = parse_key(value)
    if parsed is None:
        return None
    row = session.get(ApiKey, parsed[0])
    if row is None or row.revoked or not secret_matches(row.secret_hash, parsed[1]):
        return None
    return row
