"""Access tokens: RFC 9068 shape, chassis verification, client authentication, discovery."""

from __future__ import annotations

import dataclasses
import time

import jwt
import pytest
from authlib.oauth2.rfc8414 import AuthorizationServerMetadata
from flask.testing import FlaskClient

from chassis import TokenError, TokenSettings, TokenVerifier
from services.identity.app import create_app
from services.identity.entrypoints.deps import deps
from services.identity.service_layer.setup import DEV_SCOPE
from services.identity.settings import IdentitySettings

from .conftest import AUDIENCE, ISSUER
from .helpers import basic, cc_token


def verifier_for(client: FlaskClient) -> TokenVerifier:
    """Exactly what every other service does, with the JWKS fetched from this app."""
    settings = TokenSettings(issuer=ISSUER, audience=AUDIENCE)
    return TokenVerifier(settings.policy(), lambda: client.get("/.well-known/jwks.json").get_json())


def test_client_credentials_token_is_rfc9068_and_verifies_with_the_chassis(
    client: FlaskClient, creds: dict[str, str]
) -> None:
    body = cc_token(client, creds)
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 900
    assert "refresh_token" not in body
    token = body["access_token"]

    header = jwt.get_unverified_header(token)
    assert header["typ"] == "at+jwt"
    assert header["alg"] == "RS256"
    kids = [k["kid"] for k in client.get("/.well-known/jwks.json").get_json()["keys"]]
    assert header["kid"] in kids

    claims = verifier_for(client).verify(token)
    raw = claims.raw
    assert {"iss", "aud", "sub", "client_id", "scope", "exp", "iat", "jti"} <= set(raw)
    assert raw["iss"] == ISSUER
    assert raw["aud"] == AUDIENCE
    assert raw["sub"] == raw["client_id"] == "portico-dev"
    assert raw["exp"] - raw["iat"] == 900
    assert claims.scopes == set(DEV_SCOPE.split())


def test_token_ttl_is_configurable(settings: IdentitySettings, creds: dict[str, str]) -> None:
    app = create_app(dataclasses.replace(settings, access_token_ttl=60))
    try:
        body = cc_token(app.test_client(), creds)
    finally:
        deps(app).engine.dispose()
    raw = jwt.decode(body["access_token"], options={"verify_signature": False})
    assert body["expires_in"] == 60
    assert raw["exp"] - raw["iat"] == 60
    assert abs(raw["iat"] - time.time()) < 5


def test_requested_scope_is_narrowed_and_unknown_scope_refused(
    client: FlaskClient, creds: dict[str, str]
) -> None:
    body = cc_token(client, creds, scope="catalog:read")
    assert body["scope"] == "catalog:read"
    resp = client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "scope": "admin"},
        headers=basic(creds["client_id"], creds["client_secret"]),
    )
    assert resp.status_code == 400
    assert resp.get_json()["error"] == "invalid_scope"


def test_client_secret_post_works_and_bad_secret_is_invalid_client(
    client: FlaskClient, creds: dict[str, str]
) -> None:
    ok = client.post(
        "/oauth/token",
        data={
            "grant_type": "client_credentials",
            "client_id": creds["client_id"],
            "client_secret": creds["client_secret"],
        },
    )
    assert ok.status_code == 200
    bad = client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        headers=basic(creds["client_id"], "wrong"),
    )
    assert bad.status_code == 401
    assert bad.get_json()["error"] == "invalid_client"


def test_public_client_cannot_use_client_credentials(
    client: FlaskClient, creds: dict[str, str]
) -> None:
    resp = client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "client_id": creds["public_client_id"]},
    )
    assert resp.status_code in (400, 401)
    assert resp.get_json()["error"] in ("invalid_client", "unauthorized_client")


def test_verifier_rejects_a_token_for_another_audience(
    client: FlaskClient, creds: dict[str, str]
) -> None:
    token = cc_token(client, creds)["access_token"]
    settings = TokenSettings(issuer=ISSUER, audience="someone-else")
    other = TokenVerifier(
        settings.policy(), lambda: client.get("/.well-known/jwks.json").get_json()
    )
    with pytest.raises(TokenError):
        other.verify(token)


def test_jwks_publishes_public_keys_only(client: FlaskClient) -> None:
    resp = client.get("/.well-known/jwks.json")
    assert resp.status_code == 200
    keys = resp.get_json()["keys"]
    assert keys
    for key in keys:
        assert key["kty"] == "RSA" and key["use"] == "sig" and key["alg"] == "RS256"
        assert not {"d", "p", "q", "dp", "dq", "qi"} & set(key)


def test_metadata_is_valid_rfc8414_built_from_the_issuer(
    client: FlaskClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUTHLIB_INSECURE_TRANSPORT", "1")  # the test issuer is http
    doc = client.get("/.well-known/oauth-authorization-server").get_json()
    AuthorizationServerMetadata(doc).validate()
    assert doc["issuer"] == ISSUER
    assert doc["token_endpoint"] == f"{ISSUER}/oauth/token"
    assert doc["authorization_endpoint"] == f"{ISSUER}/oauth/authorize"
    assert doc["jwks_uri"] == f"{ISSUER}/.well-known/jwks.json"
    assert doc["introspection_endpoint"] == f"{ISSUER}/oauth/introspect"
    assert doc["revocation_endpoint"] == f"{ISSUER}/oauth/revoke"
    assert doc["code_challenge_methods_supported"] == ["S256"]


def test_other_errors_are_problem_json(client: FlaskClient) -> None:
    missing = client.get("/nope")
    assert missing.status_code == 404
    assert missing.mimetype == "application/problem+json"
    wrong_method = client.get("/oauth/token")
    assert wrong_method.status_code == 405
    assert wrong_method.mimetype == "application/problem+json"


def test_health_and_readiness(client: FlaskClient) -> None:
    assert client.get("/health/live").status_code == 200
    ready = client.get("/health/ready")
    assert ready.status_code == 200, ready.get_json()
    assert ready.get_json()["checks"] == {"database": "ok", "signing_key": "ok"}
