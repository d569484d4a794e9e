"""Token checks at the gateway: every way a token can be wrong gets the RFC 6750 answer."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from typing import Any

from cryptography.hazmat.primitives import serialization

from tests.support.tokens import TestIssuer

from .conftest import ISSUER, SVC, FakeUpstreams, GatewayClient


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(issuer: TestIssuer, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {
        "iss": issuer.issuer,
        "aud": issuer.audience,
        "sub": "mallory",
        "scope": "items:read",
        "iat": now,
        "exp": now + 300,
        **extra,
    }


def _unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    head = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())
    return head + "." + _b64(signature)


def _hs256_with_public_key(issuer: TestIssuer) -> str:
    """The classic RS/HS confusion: HMAC keyed with the issuer's public key PEM."""
    pem = issuer.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "typ": "at+jwt", "kid": issuer.kid}
    head = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(_claims(issuer)).encode())
    return head + "." + _b64(hmac.new(pem, head.encode(), hashlib.sha256).digest())


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _problem(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/problem+json"
    doc: dict[str, Any] = await resp.json()
    assert doc["status"] == status
    return doc


async def test_valid_token_is_forwarded_unchanged(
    gateway: GatewayClient, upstreams: FakeUpstreams, issuer: TestIssuer
) -> None:
    client = await gateway()
    headers = issuer.auth(scopes=["items:read"])
    resp = await client.get("/items", headers=headers)
    assert resp.status == 200
    (seen,) = upstreams.seen(SVC)
    assert seen.headers["Authorization"] == headers["Authorization"]
    # the second use is served from the verified-token cache, no refetch
    assert (await client.get("/items", headers=headers)).status == 200
    assert upstreams.jwks_fetches == 1


async def test_no_token_is_401_without_error_code(gateway: GatewayClient) -> None:
    client = await gateway()
    resp = await client.get("/items")
    await _problem(resp, 401)
    assert resp.headers["WWW-Authenticate"] == 'Bearer realm="portico"'


async def test_public_route_needs_no_token(gateway: GatewayClient) -> None:
    client = await gateway()
    assert (await client.get("/public/x")).status == 200


async def _rejected(client: Any, token: str, upstreams: FakeUpstreams) -> dict[str, Any]:
    resp = await client.get("/items", headers=_bearer(token))
    doc = await _problem(resp, 401)
    challenge = resp.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="portico", error="invalid_token"'), challenge
    assert upstreams.seen(SVC) == []  # nothing reached the upstream
    return doc


async def test_malformed_token(gateway: GatewayClient, upstreams: FakeUpstreams) -> None:
    client = await gateway()
    await _rejected(client, "not-a-jwt", upstreams)
    resp = await client.get("/items", headers={"Authorization": "Basic dXNlcjpwdw=="})
    assert resp.status == 401
    assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]


async def test_expired_token(
    gateway: GatewayClient, upstreams: FakeUpstreams, issuer: TestIssuer
) -> None:
    client = await gateway()
    past = int(time.time()) - 3600
    token = issuer.token(scopes=["items:read"], iat=past - 300, exp=past)
    doc = await _rejected(client, token, upstreams)
    assert "expired" in doc["detail"]


async def test_wrong_audience(
    gateway: GatewayClient, upstreams: FakeUpstreams, issuer: TestIssuer
) -> None:
    client = await gateway()
    doc = await _rejected(client, issuer.token(scopes=["items:read"], aud="other"), upstreams)
    assert "audience" in doc["detail"]


async def test_wrong_issuer(
    gateway: GatewayClient, upstreams: FakeUpstreams, issuer: TestIssuer
) -> None:
    client = await gateway()
    token = issuer.token(scopes=["items:read"], iss="https://evil.test")
    doc = await _rejected(client, token, upstreams)
    assert "issuer" in doc["detail"]


async def test_alg_none(
    gateway: GatewayClient, upstreams: FakeUpstreams, issuer: TestIssuer
) -> None:
    client = await gateway()
    token = _unsigned({"alg": "none", "typ": "at+jwt", "kid": issuer.kid}, _claims(issuer))
    doc = await _rejected(client, token, upstreams)
    assert "algorithm" in doc["detail"]


async def test_hs256_signed_with_the_public_key(
    gateway: GatewayClient, upstreams: FakeUpstreams, issuer: TestIssuer
) -> None:
    client = await gateway()
    doc = await _rejected(client, _hs256_with_public_key(issuer), upstreams)
    assert "algorithm" in doc["detail"]


async def test_forged_kids_refetch_jwks_at_most_once_per_interval(
    gateway: GatewayClient, upstreams: FakeUpstreams, issuer: TestIssuer
) -> None:
    client = await gateway()
    forger = TestIssuer(issuer=ISSUER)
    tokens = [
        forger.token(scopes=["items:read"], headers={"kid": f"forged-{i}"}) for i in range(25)
    ]
    responses = await asyncio.gather(*(client.get("/items", headers=_bearer(t)) for t in tokens))
    assert [r.status for r in responses] == [401] * len(tokens)
    for resp in responses:
        assert 'error="invalid_token"' in resp.headers["WWW-Authenticate"]
    # more forged kids after the first wave: still no new fetch within the interval
    for token in tokens[:5]:
        assert (await client.get("/items", headers=_bearer(token))).status == 401
    assert upstreams.jwks_fetches == 1
    assert upstreams.seen(SVC) == []
    # a genuine token is still accepted with the keys fetched once
    assert (await client.get("/items", headers=issuer.auth(scopes=["items:read"]))).status == 200
    assert upstreams.jwks_fetches == 1


async def test_missing_scope_is_403_insufficient_scope(
    gateway: GatewayClient, upstreams: FakeUpstreams, issuer: TestIssuer
) -> None:
    client = await gateway()
    resp = await client.post("/items", headers=issuer.auth(scopes=["items:read"]), json={})
    doc = await _problem(resp, 403)
    challenge = resp.headers["WWW-Authenticate"]
    assert 'error="insufficient_scope"' in challenge
    assert 'scope="items:write"' in challenge
    assert "items:write" in doc["detail"]
    assert upstreams.seen(SVC) == []


async def test_jwks_unreachable_is_503(gateway: GatewayClient, upstreams: FakeUpstreams) -> None:
    client = await gateway(
        auth={"issuer": ISSUER, "audience": "portico-api", "jwks_url": "http://nowhere.test/jwks"}
    )
    token = upstreams.issuer.token(scopes=["items:read"])
    resp = await client.get("/items", headers=_bearer(token))
    await _problem(resp, 503)
    assert "Retry-After" in resp.headers
