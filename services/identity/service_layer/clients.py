"""OAuth clients: the declarative clients file, and add / list / rotate-secret / remove.

One schema validates a client however it arrives (the clients file or `clients add`), so both
refuse the same mistakes with the same words. Functions take an open session and never commit:
the caller owns the transaction (a clients file is applied all or nothing).

Secrets are stored as SHA-256 digests, as before: that is safe only for high-entropy secrets,
so a secret given from a file must be at least `MIN_SECRET_LENGTH` characters (generated
ones are 256-bit). Rotation keeps the old digest as "previous", valid until retired.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from marshmallow import Schema, ValidationError, fields, validate, validates_schema
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from chassis import ConfigError
from chassis.validation import key_paths

from ..adapters.orm import AuthorizationCode, Client, Token
from ..domain import scopes
from ..domain.passwords import secret_digest

__all__ = [
    "AUTH_METHODS",
    "GRANT_TYPES",
    "MIN_SECRET_LENGTH",
    "ClientError",
    "ClientSpec",
    "add_client",
    "client_spec",
    "describe_client",
    "list_clients",
    "load_clients_file",
    "new_secret",
    "read_secret_file",
    "remove_client",
    "retire_previous_secret",
    "rotate_secret",
    "upsert_client",
]

GRANT_TYPES = ("client_credentials", "authorization_code", "refresh_token")
AUTH_METHODS = ("client_secret_basic", "client_secret_post", "none")
MIN_SECRET_LENGTH = 32


class ClientError(Exception):
    """A client command that cannot be done as asked; the message says why."""


@dataclass(frozen=True)
class ClientSpec:
    """A client as it should be stored; `secret` is None for public clients."""

    client_id: str
    name: str
    grant_types: tuple[str, ...]
    scope: str
    token_endpoint_auth_method: str
    redirect_uris: tuple[str, ...]
    secret: str | None = None
    previous_secret: str | None = None

    @property
    def is_public(self) -> bool:
        return self.token_endpoint_auth_method == "none"


def _known_scopes(value: str) -> None:
    unknown = [s for s in value.split() if s not in scopes.SUPPORTED]
    if unknown:
        raise ValidationError(f"unknown scopes: {' '.join(unknown)}")
    if not value.split():
        raise ValidationError("must name at least one scope")


class ClientSchema(Schema):
    """One client; unknown keys are refused (marshmallow's default)."""

    client_id = fields.String(
        required=True,
        validate=[
            validate.Length(min=1, max=64),
            validate.Regexp(r"^[A-Za-z0-9][A-Za-z0-9_.-]*\Z", error="letters, digits, '_.-'"),
        ],
    )
    name = fields.String(required=True, validate=validate.Length(min=1, max=128))
    grant_types = fields.List(
        fields.String(validate=validate.OneOf(GRANT_TYPES)),
        required=True,
        validate=validate.Length(min=1),
    )
    scope = fields.String(required=True, validate=_known_scopes)
    token_endpoint_auth_method = fields.String(
        load_default="client_secret_basic", validate=validate.OneOf(AUTH_METHODS)
    )
    redirect_uris = fields.List(
        fields.String(
            validate=validate.Regexp(
                r"^[A-Za-z][A-Za-z0-9+.-]*:[^\s#]+\Z", error="an absolute URI without fragment"
            )
        ),
        load_default=list,
    )
    secret_file = fields.String(load_default=None, validate=validate.Length(min=1))
    # Optional: the secret before a rotation, still accepted until this key is removed.
    previous_secret_file = fields.String(load_default=None, validate=validate.Length(min=1))

    @validates_schema
    def _consistent(self, data: dict[str, Any], **_: Any) -> None:
        grants = set(data.get("grant_types") or ())
        public = data.get("token_endpoint_auth_method") == "none"
        if public and "client_credentials" in grants:
            raise ValidationError(
                "a public client (token_endpoint_auth_method: none) cannot use client_credentials",
                "grant_types",
            )
        if "refresh_token" in grants and "authorization_code" not in grants:
            raise ValidationError("refresh_token needs authorization_code", "grant_types")
        if "authorization_code" in grants and not data.get("redirect_uris"):
            raise ValidationError("authorization_code needs at least one URI", "redirect_uris")
        if public and (data.get("secret_file") or data.get("previous_secret_file")):
            raise ValidationError("a public client has no secret", "secret_file")


class _FileClientSchema(ClientSchema):
    @validates_schema
    def _secret_given(self, data: dict[str, Any], **_: Any) -> None:
        if data.get("token_endpoint_auth_method") != "none" and not data.get("secret_file"):
            raise ValidationError("a confidential client needs its secret_file", "secret_file")


class _ClientsFileSchema(Schema):
    clients = fields.List(fields.Nested(_FileClientSchema), required=True)

    @validates_schema
    def _unique(self, data: dict[str, Any], **_: Any) -> None:
        seen: set[str] = set()
        for i, client in enumerate(data.get("clients") or ()):
            if client["client_id"] in seen:
                raise ValidationError(
                    {"clients": {i: {"client_id": [f"{client['client_id']} appears twice"]}}}
                )
            seen.add(client["client_id"])


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def read_secret_file(path: str | Path, where: str = "secret_file") -> str:
    """The file's stripped content; errors name `where` (the key that gave the path)."""
    try:
        value = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(f"{where}: cannot read {path}: {reason}") from None
    if len(value) < MIN_SECRET_LENGTH:
        raise ConfigError(
            f"{where}: the secret in {path} is shorter than {MIN_SECRET_LENGTH} characters "
            "(make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return value


def _spec(data: dict[str, Any], secret: str | None, previous: str | None) -> ClientSpec:
    return ClientSpec(
        client_id=data["client_id"],
        name=data["name"],
        grant_types=tuple(dict.fromkeys(data["grant_types"])),
        scope=" ".join(dict.fromkeys(data["scope"].split())),
        token_endpoint_auth_method=data["token_endpoint_auth_method"],
        redirect_uris=tuple(dict.fromkeys(data["redirect_uris"])),
        secret=secret,
        previous_secret=previous,
    )


def client_spec(data: dict[str, Any], secret: str | None = None) -> ClientSpec:
    """Validate one client given as a mapping (the command line); `secret` for a confidential
    client is generated when not given.
    """
    try:
        loaded = ClientSchema().load(data)
    except ValidationError as exc:
        raise ClientError("; ".join(key_paths(exc.messages))) from None
    if loaded["token_endpoint_auth_method"] == "none":
        if secret:
            raise ClientError("a public client (auth method none) has no secret")
        return _spec(loaded, None, None)
    return _spec(loaded, secret or new_secret(), None)


def load_clients_file(path: str | Path) -> list[ClientSpec]:
    """Parse and validate a clients file and read every secret it names. A relative
    `secret_file` is read relative to the clients file's directory.
    """
    file = Path(path)
    try:
        raw = yaml.safe_load(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read clients file {file}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"clients file {file} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"invalid clients file {file}: the document must be a mapping")
    try:
        loaded = _ClientsFileSchema().load(raw)
    except ValidationError as exc:
        lines = "; ".join(key_paths(exc.messages))
        raise ConfigError(f"invalid clients file {file}: {lines}") from None
    specs = []
    for i, data in enumerate(loaded["clients"]):
        secret = previous = None
        try:
            if data["secret_file"]:
                where = f"clients[{i}].secret_file"
                secret = read_secret_file(file.parent / data["secret_file"], where)
            if data["previous_secret_file"]:
                where = f"clients[{i}].previous_secret_file"
                previous = read_secret_file(file.parent / data["previous_secret_file"], where)
        except ConfigError as exc:
            raise ConfigError(f"invalid clients file {file}: {exc}") from None
        specs.append(_spec(data, secret, previous))
    return specs


def upsert_client(session: Session, spec: ClientSpec) -> Client:
    """Make the stored client exactly `spec` (insert or update by client_id)."""
    fields_ = {
        "client_name": spec.name,
        "client_secret_hash": secret_digest(spec.secret) if spec.secret else None,
        "previous_client_secret_hash": (
            secret_digest(spec.previous_secret) if spec.previous_secret else None
        ),
        "token_endpoint_auth_method": spec.token_endpoint_auth_method,
        "grant_types": " ".join(spec.grant_types),
        "response_types": "code" if "authorization_code" in spec.grant_types else "",
        "redirect_uris": " ".join(spec.redirect_uris),
        "scope": spec.scope,
    }
    client = session.get(Client, spec.client_id)
    if client is None:
        client = Client(client_id=spec.client_id, **fields_)
        session.add(client)
    else:
        for name, value in fields_.items():
            setattr(client, name, value)
    session.flush()
    return client


def add_client(session: Session, spec: ClientSpec) -> Client:
    if session.get(Client, spec.client_id) is not None:
        raise ClientError(f"client {spec.client_id} exists; rotate its secret or remove it first")
    return upsert_client(session, spec)


def describe_client(client: Client) -> dict[str, Any]:
    """What `clients list` shows: never a secret or its digest."""
    return {
        "client_id": client.client_id,
        "name": client.client_name,
        "grant_types": client.grant_types.split(),
        "scope": client.scope,
        "token_endpoint_auth_method": client.token_endpoint_auth_method,
        "redirect_uris": client.redirect_uris.split(),
        "previous_secret_valid": client.previous_client_secret_hash is not None,
    }


def list_clients(session: Session) -> list[dict[str, Any]]:
    return [describe_client(c) for c in session.scalars(select(Client).order_by(Client.client_id))]


def _confidential(session: Session, client_id: str) -> Client:
    client = session.get(Client, client_id)
    if client is None:
        raise ClientError(f"no client {client_id}")
    if client.is_public:
        raise ClientError(f"client {client_id} is public: it has no secret")
    return client


def rotate_secret(session: Session, client_id: str, secret: str | None = None) -> str:
    """Make `secret` (or a generated one) current; the current one becomes "previous" and
    keeps working until retired. A secret that was already "previous" stops working.
    """
    client = _confidential(session, client_id)
    secret = secret or new_secret()
    client.previous_client_secret_hash = client.client_secret_hash
    client.client_secret_hash = secret_digest(secret)
    session.flush()
    return secret


def retire_previous_secret(session: Session, client_id: str) -> bool:
    """Stop accepting the secret before the last rotation; False when there was none."""
    client = _confidential(session, client_id)
    had = client.previous_client_secret_hash is not None
    client.previous_client_secret_hash = None
    session.flush()
    return had


def remove_client(session: Session, client_id: str) -> int:
    """Delete the client, its pending codes and its token records (so introspection reports
    them inactive and refresh tokens stop working); returns how many tokens were removed.
    JWT access tokens already issued stay valid at verifiers until they expire.
    """
    if session.get(Client, client_id) is None:
        raise ClientError(f"no client {client_id}")
    session.execute(delete(AuthorizationCode).where(AuthorizationCode.client_id == client_id))
    removed = session.execute(delete(Token).where(Token.client_id == client_id))
    session.execute(delete(Client).where(Client.client_id == client_id))
    session.flush()
    return int(removed.rowcount)  # type: ignore[attr-defined]
