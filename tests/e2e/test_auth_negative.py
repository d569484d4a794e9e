"""Tokens the gateway must refuse, sent through the real stack: each gets the right status,
problem+json and an RFC 6750 `WWW-Authenticate` challenge. Forged tokens are signed with
identity's real signing key, so only the checked property is wrong."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from typing import Any

import jwt
import pytest
import requests
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from tools.stack import Stack


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.fixture(scope="module")
def signing_key(stack: Stack) -> tuple[str, Any]:
    doc = json.loads((stack.var / "identity" / "signing-keys.json").read_text())
    entry = doc["keys"][-1]
    return entry["kid"], jwt.PyJWK(entry["jwk"]).key


@pytest.fixture(scope="module")
def claims(stack: Stack, creds: dict[str, str]) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": stack.gateway_url,
        "aud": "portico-api",
        "sub": creds["client_id"],
        "client_id": creds["client_id"],
        "scope": "catalog:read",
        "iat": now,
        "exp": now + 300,
        "jti": uuid.uuid4().hex,
    }


def _sign(key: Any, kid: str, claims: dict[str, Any], **overrides: Any) -> str:
    body = {**claims, **overrides}
    return jwt.encode(body, key, algorithm="RS256", headers={"kid": kid, "typ": "at+jwt"})


def _products(gateway: str, token: str | None, method: str = "GET") -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return requests.request(
        method, f"{gateway}/api/v1/products", headers=headers, timeout=10, json={}
    )


def _assert_invalid(resp: requests.Response, why: str) -> None:
    assert resp.status_code == 401, (why, resp.status_code, resp.text)
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    challenge = resp.headers["WWW-Authenticate"]
    assert challenge.startswith("Bearer ")
    assert 'error="invalid_token"' in challenge, why
    assert "Traceback" not in resp.text


def test_a_forged_but_well_formed_token_is_accepted(
    gateway: str, signing_key: tuple[str, Any], claims: dict[str, Any]
) -> None:
    """The control: the forging itself is sound, so each refusal below is for its one reason."""
    kid, key = signing_key
    assert _products(gateway, _sign(key, kid, claims)).status_code == 200


def test_no_token(gateway: str) -> None:
    resp = _products(gateway, None)
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="portico"'
    assert resp.json()["status"] == 401


def test_malformed(gateway: str) -> None:
    _assert_invalid(_products(gateway, "not-a-jwt"), "malformed")
    basic = requests.get(
        f"{gateway}/api/v1/products", headers={"Authorization": "Basic eDp5"}, timeout=10
    )
    _assert_invalid(basic, "wrong scheme")


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        ({"exp": int(time.time()) - 600, "iat": int(time.time()) - 1200}, "expired"),
        ({"aud": "someone-else"}, "wrong aud"),
        ({"iss": "https://evil.example"}, "wrong iss"),
        ({"nbf": int(time.time()) + 600}, "not yet valid"),
    ],
)
def test_bad_claims(
    gateway: str,
    signing_key: tuple[str, Any],
    claims: dict[str, Any],
    overrides: dict[str, Any],
    why: str,
) -> None:
    kid, key = signing_key
    _assert_invalid(_products(gateway, _sign(key, kid, claims, **overrides)), why)


def test_alg_none(gateway: str, signing_key: tuple[str, Any], claims: dict[str, Any]) -> None:
    kid, _ = signing_key
    header = {"alg": "none", "typ": "at+jwt", "kid": kid}
    token = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}."
    _assert_invalid(_products(gateway, token), "alg none")


def test_hs256_signed_with_the_public_key(
    gateway: str, signing_key: tuple[str, Any], claims: dict[str, Any]
) -> None:
    kid, key = signing_key
    pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    head = f"{_b64(json.dumps({'alg': 'HS256', 'typ': 'at+jwt', 'kid': kid}).encode())}"
    signing_input = f"{head}.{_b64(json.dumps(claims).encode())}"
    mac = hmac.new(pem, signing_input.encode(), hashlib.sha256).digest()
    _assert_invalid(_products(gateway, f"{signing_input}.{_b64(mac)}"), "HS256 confusion")


def test_unknown_kid(gateway: str, claims: dict[str, Any]) -> None:
    stranger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _assert_invalid(_products(gateway, _sign(stranger, "not-ours", claims)), "unknown kid")


def test_missing_scope_is_403(
    gateway: str, signing_key: tuple[str, Any], claims: dict[str, Any]
) -> None:
    kid, key = signing_key
    resp = _products(gateway, _sign(key, kid, claims), method="POST")
    assert resp.status_code == 403
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    challenge = resp.headers["WWW-Authenticate"]
    assert 'error="insufficient_scope"' in challenge
    assert 'scope="catalog:write"' in challenge


def test_revoked_token_is_inactive_at_introspection(gateway: str, creds: dict[str, str]) -> None:
    """ADR 0002: JWT routes do not check revocation (short-lived tokens, no per-request call to
    identity); revocation is visible through RFC 7662 introspection at once."""
    auth = (creds["client_id"], creds["client_secret"])
    token = requests.post(
        f"{gateway}/oauth/token",
        data={"grant_type": "client_credentials", "scope": "catalog:read"},
        auth=auth,
        timeout=10,
    ).json()["access_token"]
    introspect = f"{gateway}/oauth/introspect"
    assert requests.post(introspect, data={"token": token}, auth=auth, timeout=10).json()["active"]
    revoked = requests.post(f"{gateway}/oauth/revoke", data={"token": token}, auth=auth, timeout=10)
    assert revoked.status_code == 200
    after = requests.post(introspect, data={"token": token}, auth=auth, timeout=10).json()
    assert after == {"active": False}
    # documented behaviour, asserted so that a change to it is a deliberate one
    assert _products(gateway, token).status_code == 200
