"""OAuth endpoints, the login + consent page and the discovery documents.

The token, introspection and revocation endpoints answer errors in RFC 6749 JSON
(`{"error": ...}`), as OAuth clients expect; everything else here answers problem+json.
Each endpoint commits its transaction only when it succeeded.
"""

from __future__ import annotations

from typing import Any

from authlib.oauth2 import OAuth2Error
from authlib.oauth2.rfc6749.errors import InvalidScopeError
from authlib.oauth2.rfc6749.util import scope_to_list
from flask import Blueprint, Response, jsonify, render_template, request

from chassis import Problem

from ..adapters.repository import SqlUserRepository
from ..domain import roles, scopes
from ..service_layer.users import InvalidCredentials, LoginThrottled, authenticate
from .deps import db, deps
from .forms import LoginConsentForm

__all__ = ["bp", "server_metadata"]

bp = Blueprint("oauth", __name__)


def _committed(resp: Response) -> Response:
    if resp.status_code == 200:
        db().commit()
    return resp


@bp.post("/oauth/token")
def token() -> Response:
    """The token endpoint (RFC 6749): client_credentials, authorization_code + PKCE, refresh.
    ---
    post:
      operationId: oauthToken
      summary: Issue an access token
      tags: [oauth]
      security: []
      requestBody:
        required: true
        content: {application/x-www-form-urlencoded: {schema: TokenRequestSchema}}
      responses:
        200:
          description: An access token (and, for user grants, a rotated refresh token)
          headers:
            Cache-Control: {description: no-store, schema: {type: string}}
          content: {application/json: {schema: TokenResponseSchema}}
        400:
          description: 'RFC 6749 error: invalid_request, invalid_grant, unsupported_grant_type...'
          content: {application/json: {schema: OAuthErrorSchema}}
        401:
          description: 'RFC 6749 error invalid_client: unknown client or wrong secret'
          content: {application/json: {schema: OAuthErrorSchema}}
        413: ContentTooLarge
    """
    return _committed(deps().server.create_token_response())


@bp.post("/oauth/introspect")
def introspect() -> Response:
    """Token introspection (RFC 7662), for confidential clients.
    ---
    post:
      operationId: oauthIntrospect
      summary: Introspect a token
      tags: [oauth]
      security: []
      requestBody:
        required: true
        content: {application/x-www-form-urlencoded: {schema: IntrospectRequestSchema}}
      responses:
        200:
          description: 'The state; only `active: false` when revoked, expired or unknown'
          content: {application/json: {schema: IntrospectionSchema}}
        400:
          description: 'RFC 6749 error: invalid_request, invalid_grant, unsupported_grant_type...'
          content: {application/json: {schema: OAuthErrorSchema}}
        401:
          description: 'RFC 6749 error invalid_client: unknown client or wrong secret'
          content: {application/json: {schema: OAuthErrorSchema}}
        413: ContentTooLarge
    """
    return _committed(deps().server.create_endpoint_response("introspection"))


@bp.post("/oauth/revoke")
def revoke() -> Response:
    """Token revocation (RFC 7009).
    ---
    post:
      operationId: oauthRevoke
      summary: Revoke an access or refresh token
      tags: [oauth]
      security: []
      requestBody:
        required: true
        content: {application/x-www-form-urlencoded: {schema: RevokeRequestSchema}}
      responses:
        200:
          description: Revoked, or the token was unknown (RFC 7009 section 2.2)
        400:
          description: 'RFC 6749 error: invalid_request, invalid_grant, unsupported_grant_type...'
          content: {application/json: {schema: OAuthErrorSchema}}
        401:
          description: 'RFC 6749 error invalid_client: unknown client or wrong secret'
          content: {application/json: {schema: OAuthErrorSchema}}
        413: ContentTooLarge
    """
    return _committed(deps().server.create_endpoint_response("revocation"))


@bp.get("/.well-known/jwks.json")
def jwks() -> Response:
    """The public signing keys.
    ---
    get:
      operationId: jwks
      summary: The JSON Web Key Set every verifier trusts
      tags: [oauth]
      security: []
      responses:
        200:
          description: Pending, active and recently retired public keys
          content: {application/json: {schema: JwksSchema}}
    """
    resp = jsonify(deps().keystore.jwks())
    # Verifiers refetch on an unknown kid; no cache in between may hold an old key set.
    resp.headers["Cache-Control"] = "no-cache"
    return resp


def server_metadata(issuer: str) -> dict[str, Any]:
    """RFC 8414 metadata; endpoint URLs hang off the issuer, the gateway's public URL."""
    base = issuer.rstrip("/")
    return {
        "issuer": issuer,
        "authorization_endpoint": f"{base}/oauth/authorize",
        "token_endpoint": f"{base}/oauth/token",
        "jwks_uri": f"{base}/.well-known/jwks.json",
        "introspection_endpoint": f"{base}/oauth/introspect",
        "revocation_endpoint": f"{base}/oauth/revoke",
        "scopes_supported": list(scopes.SUPPORTED),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "client_credentials", "refresh_token"],
        "token_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "none",
        ],
        "introspection_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
        ],
        "revocation_endpoint_auth_methods_supported": [
            "client_secret_basic",
            "client_secret_post",
            "none",
        ],
        "code_challenge_methods_supported": ["S256"],
    }


@bp.get("/.well-known/oauth-authorization-server")
def metadata() -> Response:
    """RFC 8414 discovery.
    ---
    get:
      operationId: authorizationServerMetadata
      summary: Authorization server metadata (RFC 8414)
      tags: [oauth]
      security: []
      responses:
        200:
          description: The endpoints, scopes and methods supported
          content: {application/json: {schema: ServerMetadataSchema}}
    """
    return jsonify(server_metadata(deps().settings.tokens.issuer))


def _page(form: LoginConsentForm, grant: Any, error: str | None = None) -> Response:
    """Only what can be granted: the requested scopes the client may have (Authlib has already
    narrowed `grant.request.scope` to those), split by whether every account may hold them. The
    person signing in is not known yet, so staff-only scopes are listed apart, marked as such.
    """
    requested = scope_to_list(grant.request.scope) or []
    everyone = roles.allowed_scopes(roles.Role.CUSTOMER)
    html = render_template(
        "authorize.html",
        form=form,
        client_name=grant.client.client_name,
        scopes=[(s, scopes.describe(s)) for s in requested if s in everyone],
        staff_scopes=[(s, scopes.describe(s)) for s in requested if s not in everyone],
        error=error,
    )
    resp = Response(html, mimetype="text/html")
    resp.headers["Cache-Control"] = "no-store"
    resp.headers["X-Frame-Options"] = "DENY"  # no clickjacking of the consent buttons
    # No form-action: browsers apply it to the redirect to the client after the POST too.
    resp.headers["Content-Security-Policy"] = (
        "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"
    )
    return resp


@bp.route("/oauth/authorize", methods=["GET", "POST"])
def authorize() -> Response:
    """GET shows the form; POST carries credentials and the decision (`confirm`=yes|no).
    ---
    get:
      operationId: oauthAuthorizePage
      summary: The login + consent page of an authorization request
      tags: [oauth]
      security: []
      parameters:
        - in: query
          schema: AuthorizeQuerySchema
      responses:
        200:
          description: The page
          content: {text/html: {schema: {type: string}}}
        302:
          description: An RFC 6749 error sent back to the client's redirect URI
          headers:
            Location: {description: 'redirect_uri?error=...', schema: {type: string}}
        400: BadRequest
    post:
      operationId: oauthAuthorize
      summary: Sign in and allow (or deny) the authorization request
      tags: [oauth]
      security: []
      parameters:
        - in: query
          schema: AuthorizeQuerySchema
      requestBody:
        required: true
        content: {application/x-www-form-urlencoded: {schema: AuthorizeFormSchema}}
      responses:
        200:
          description: The page again, saying what was wrong with the sign-in
          content: {text/html: {schema: {type: string}}}
        302:
          description: Back to the client's redirect URI with `code` (or `error`)
          headers:
            Location: {description: 'redirect_uri?code=...&state=...', schema: {type: string}}
        400: BadRequest
        413: ContentTooLarge
        429: TooManyRequests
    """
    ctx = deps()
    server = ctx.server
    try:
        grant = server.get_consent_grant(end_user=None)
    except ValueError as exc:  # Authlib will not build an error text echoing non-ASCII input
        raise Problem(
            400,
            "the authorization request is malformed",
            title="Invalid authorization request",
            error="invalid_request",
        ) from exc
    except OAuth2Error as error:
        if error.redirect_uri:  # the client and its redirect URI are known: tell the client
            return server.handle_error_response(None, error)  # type: ignore[no-any-return]
        # Unknown client or redirect URI: never redirect there (RFC 6749 section 4.1.2.1).
        raise Problem(
            400,
            error.description or error.error,
            title="Invalid authorization request",
            error=error.error,
        ) from error

    form = LoginConsentForm()
    if request.method == "GET":
        return _page(form, grant)
    if not form.validate_on_submit():
        raise Problem(400, "the form's CSRF token is missing or invalid: reload the page")
    if request.form.get("confirm") != "yes":
        return server.create_authorization_response(grant=grant, grant_user=None)  # type: ignore[no-any-return]

    username, password = form.username.data or "", form.password.data or ""
    if not username or not password:
        return _page(form, grant, "Enter your username and password.")
    session = db()
    try:
        user = authenticate(
            SqlUserRepository(session),
            ctx.passwords,
            ctx.throttle,
            username=username,
            password=password,
            ip=request.remote_addr or "unknown",
        )
    except LoginThrottled as exc:
        session.commit()
        raise Problem(
            429,
            "too many failed sign-ins for this username; try again later",
            headers={"Retry-After": str(exc.retry_after)},
        ) from exc
    except InvalidCredentials:
        session.commit()  # the failure must count even though the request "fails"
        return _page(form, grant, "Invalid username or password.")
    if not roles.cap_scope(user.role, grant.request.scope):
        session.commit()  # the sign-in succeeded (its failure count was reset)
        denied = InvalidScopeError(
            "none of the requested scopes can be granted to this account",
            redirect_uri=grant.redirect_uri,
            state=grant.request.payload.state,
        )
        return server.handle_error_response(grant.request, denied)  # type: ignore[no-any-return]
    resp: Response = server.create_authorization_response(grant=grant, grant_user=user)
    session.commit()
    return resp
