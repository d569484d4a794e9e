"""Marshmallow schemas: registration, users, and the OAuth endpoints' documents.

`RegisterSchema` validates requests. The OAuth schemas only describe (Authlib parses those
forms itself): the form fields RFC 6749, 7662 and 7009 define, unknown fields ignored as
RFC 6749 section 3.2 requires, and the RFC 6749 JSON error every OAuth client parses.
Class names are unique across services (the gateway merges every service's document).
"""

from __future__ import annotations

from marshmallow import INCLUDE, RAISE, Schema, fields, validate

from chassis import FullMatch

from .domain import scopes

__all__ = [
    "USERNAME_PATTERN",
    "AuthorizeFormSchema",
    "AuthorizeQuerySchema",
    "IntrospectRequestSchema",
    "IntrospectionSchema",
    "JwksSchema",
    "OAuthErrorSchema",
    "RegisterSchema",
    "RevokeRequestSchema",
    "ServerMetadataSchema",
    "TokenRequestSchema",
    "TokenResponseSchema",
    "UserSchema",
]

USERNAME_PATTERN = r"^[A-Za-z0-9_.-]+$"
GRANT_TYPES = ("client_credentials", "authorization_code", "refresh_token")
_SCOPE_DOC = {
    "description": "space-separated scopes, of: " + " ".join(scopes.SUPPORTED),
    "example": "catalog:read orders:read",
}


class RegisterSchema(Schema):
    """Self-registration; unknown fields are refused (422), so is a username taken (409)."""

    class Meta:
        unknown = RAISE

    username = fields.String(
        required=True,
        validate=[
            validate.Length(min=3, max=32),
            FullMatch(USERNAME_PATTERN, error="letters, digits, '_', '.', '-' only"),
        ],
        metadata={
            "pattern": USERNAME_PATTERN,
            "description": "3-32 of A-Z a-z 0-9 _ . -; unique ignoring case",
            "example": "ada",
        },
    )
    email = fields.Email(required=True, validate=validate.Length(max=254))
    password = fields.String(
        required=True,
        validate=validate.Length(min=8, max=256),
        metadata={"format": "password", "writeOnly": True},
    )


class UserSchema(Schema):
    """A user as the API returns it (the caller's own record only)."""

    id = fields.String(required=True, metadata={"pattern": "^[0-9a-f]{32}$"})
    username = fields.String(required=True, metadata={"description": "lower-cased"})
    email = fields.String(required=True, metadata={"format": "email"})


class TokenRequestSchema(Schema):
    """RFC 6749 section 4: a confidential client authenticates with HTTP Basic (or
    `client_id` + `client_secret` in the form); a public client sends only `client_id`."""

    class Meta:
        unknown = INCLUDE

    grant_type = fields.String(required=True, metadata={"enum": list(GRANT_TYPES)})
    scope = fields.String(metadata=_SCOPE_DOC)
    code = fields.String(metadata={"description": "authorization_code: the code received"})
    redirect_uri = fields.String(
        metadata={"description": "authorization_code: as in the authorization request"}
    )
    code_verifier = fields.String(
        metadata={"description": "authorization_code: the PKCE verifier (S256)"}
    )
    refresh_token = fields.String(metadata={"description": "refresh_token: the token (rotated)"})
    client_id = fields.String()
    client_secret = fields.String()


class TokenResponseSchema(Schema):
    access_token = fields.String(required=True, metadata={"description": "an RFC 9068 JWT"})
    token_type = fields.String(required=True, metadata={"enum": ["Bearer"]})
    expires_in = fields.Integer(required=True)
    scope = fields.String(metadata={"description": "the granted scopes, space-separated"})
    refresh_token = fields.String(metadata={"description": "authorization_code, refresh_token"})


class OAuthErrorSchema(Schema):
    """RFC 6749 section 5.2, as the token, introspection and revocation endpoints answer."""

    class Meta:
        unknown = INCLUDE

    error = fields.String(required=True, metadata={"example": "invalid_grant"})
    error_description = fields.String()
    error_uri = fields.String()


class IntrospectRequestSchema(Schema):
    """RFC 7662; the caller is a confidential client (HTTP Basic or form credentials)."""

    class Meta:
        unknown = INCLUDE

    token = fields.String(required=True)
    token_type_hint = fields.String(metadata={"enum": ["access_token", "refresh_token"]})
    client_id = fields.String()
    client_secret = fields.String()


class IntrospectionSchema(Schema):
    """RFC 7662 section 2.2: only `active` when the token is not active."""

    class Meta:
        unknown = INCLUDE

    active = fields.Boolean(required=True)
    scope = fields.String()
    client_id = fields.String()
    username = fields.String()
    token_type = fields.String()
    exp = fields.Integer()
    iat = fields.Integer()
    sub = fields.String()
    aud = fields.Raw(metadata={"description": "a string or a list of strings"})
    iss = fields.String()
    jti = fields.String()


class RevokeRequestSchema(Schema):
    """RFC 7009; a public client may revoke its own tokens with only `client_id`."""

    class Meta:
        unknown = INCLUDE

    token = fields.String(required=True)
    token_type_hint = fields.String(metadata={"enum": ["access_token", "refresh_token"]})
    client_id = fields.String()
    client_secret = fields.String()


class JwksSchema(Schema):
    keys = fields.List(
        fields.Dict(), required=True, metadata={"description": "public JWKs (RFC 7517)"}
    )


class ServerMetadataSchema(Schema):
    """RFC 8414 authorization server metadata."""

    class Meta:
        unknown = INCLUDE

    issuer = fields.String(required=True)
    authorization_endpoint = fields.String(required=True)
    token_endpoint = fields.String(required=True)
    jwks_uri = fields.String(required=True)
    introspection_endpoint = fields.String()
    revocation_endpoint = fields.String()
    scopes_supported = fields.List(fields.String())
    response_types_supported = fields.List(fields.String(), required=True)
    grant_types_supported = fields.List(fields.String())
    code_challenge_methods_supported = fields.List(fields.String())


class AuthorizeQuerySchema(Schema):
    """RFC 6749 section 4.1.1 with PKCE (RFC 7636, S256 only)."""

    class Meta:
        unknown = INCLUDE

    response_type = fields.String(required=True, metadata={"enum": ["code"]})
    client_id = fields.String(required=True)
    redirect_uri = fields.String(
        metadata={"description": "exactly one of the client's registered URIs"}
    )
    scope = fields.String(metadata=_SCOPE_DOC)
    state = fields.String()
    code_challenge = fields.String(metadata={"description": "required for public clients"})
    code_challenge_method = fields.String(metadata={"enum": ["S256"]})


class AuthorizeFormSchema(Schema):
    """The login + consent page's one POST (the query string stays the authorization
    request's)."""

    class Meta:
        unknown = INCLUDE

    csrf_token = fields.String(required=True, metadata={"description": "from the page"})
    username = fields.String()
    password = fields.String(metadata={"format": "password"})
    confirm = fields.String(metadata={"enum": ["yes", "no"]})
