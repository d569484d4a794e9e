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

from ..domain import roles, scopes
from ..service_layer.users import InvalidCredentials, LoginThrottled, authenticate
from .context import db, identity
from .forms import LoginConsentForm

__all__ = ["bp", "server_metadata"]

bp = Blueprint("oauth", __name__)


def _committed(resp: Response) -> Response:
    if resp.status_code == 200:
        db().commit()
    return resp


@bp.post("/oauth/token")
def token() -> Response:
    return _committed(identity().server.create_token_response())


@bp.post("/oauth/introspect")
def introspect() -> Response:
    return _committed(identity().server.create_endpoint_response("introspection"))


@bp.post("/oauth/revoke")
def revoke() -> Response:
    return _committed(identity().server.create_endpoint_response("revocation"))


@bp.get("/.well-known/jwks.json")
def jwks() -> Response:
    resp = jsonify(identity().keystore.jwks())
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
    return jsonify(server_metadata(identity().settings.tokens.issuer))


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
    """GET shows the form; POST carries credentials and the decision (`confirm`=yes|no)."""
    ctx = identity()
    server = ctx.server
    try:
        grant = server.get_consent_grant(end_user=None)
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
            session,
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
