from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from chassis import tokens as tokens_mod
from chassis.tokens import (
    InsufficientScope,
    KeysUnavailable,
    MissingToken,
    TokenError,
    TokenPolicy,
    TokenVerifier,
    bearer_token,
    token_problem,
)
from tests.support.tokens import TestIssuer


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unsigned(header: dict[str, Any], claims: dict[str, Any], key: bytes = b"") -> str:
    head = _b64(json.dumps(header).encode()) + "." + _b64(json.dumps(claims).encode())
    if not key:
        return head + "."
    return head + "." + _b64(hmac.new(key, head.encode(), hashlib.sha256).digest())


@pytest.fixture
def issuer() -> TestIssuer:
    return TestIssuer()


def test_valid_token_gives_claims_and_scopes(issuer: TestIssuer) -> None:
    claims = issuer.verifier().verify(issuer.token(["catalog:read", "profile"], sub="c1"))
    assert claims.subject == "c1"
    assert claims.client_id == "c1"
    assert claims.scopes == {"catalog:read", "profile"}
    claims.require(["catalog:read"])
    with pytest.raises(InsufficientScope) as err:
        claims.require(["catalog:write"])
    assert err.value.status == 403


def test_sees_own_resources_or_everyones_with_the_read_all_scope(issuer: TestIssuer) -> None:
    verify = issuer.verifier().verify
    alice = verify(issuer.token(["payments:read"], sub="alice"))
    assert alice.sees("alice", "payments:read:all")
    assert not alice.sees("bob", "payments:read:all")
    assert not alice.sees(None, "payments:read:all")  # no owner: staff only
    assert alice.owner_filter("payments:read:all") == "alice"
    staff = verify(issuer.token(["payments:read", "payments:read:all"], sub="carol"))
    assert staff.sees("bob", "payments:read:all") and staff.sees(None, "payments:read:all")
    assert staff.owner_filter("payments:read:all") is None
    # one resource's :read:all scope says nothing about another's
    assert not staff.sees("bob", "orders:read:all")
    assert staff.owner_filter("orders:read:all") == "carol"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"exp": int(time.time()) - 3600}, "expired"),
        ({"nbf": int(time.time()) + 3600}, "not valid yet"),
        ({"aud": "someone-else"}, "audience"),
        ({"iss": "https://evil.test"}, "issuer"),
        ({"sub": None}, "invalid"),
    ],
)
def test_bad_claims_are_refused(
    issuer: TestIssuer, overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(TokenError, match=message):
        issuer.verifier().verify(issuer.token(["x"], **overrides))


def test_alg_none_is_refused(issuer: TestIssuer) -> None:
    token = _unsigned(
        {"alg": "none", "typ": "at+jwt", "kid": issuer.kid},
        {"iss": issuer.issuer, "aud": issuer.audience, "sub": "a", "exp": 2**31, "iat": 0},
    )
    with pytest.raises(TokenError, match="algorithm 'none'"):
        issuer.verifier().verify(token)


def test_hs256_signed_with_the_public_key_is_refused(issuer: TestIssuer) -> None:
    pem = issuer.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    claims = {"iss": issuer.issuer, "aud": issuer.audience, "sub": "a", "exp": 2**31, "iat": 0}
    token = _unsigned({"alg": "HS256", "typ": "at+jwt", "kid": issuer.kid}, claims, key=pem)
    with pytest.raises(TokenError, match="HS256"):
        issuer.verifier().verify(token)
    # even a verifier mis-configured to allow HS256 could not be built
    with pytest.raises(ValueError, match="not allowed"):
        TokenPolicy(issuer="i", audience="a", algorithms=("HS256",))


def _reheader(token: str, **changes: Any) -> str:
    head, payload, sig = token.split(".")
    header = json.loads(base64.urlsafe_b64decode(head + "=="))
    header.update(changes)
    header = {k: v for k, v in header.items() if v is not None}
    return _b64(json.dumps(header).encode()) + "." + payload + "." + sig


def test_algorithm_must_match_the_key_type(issuer: TestIssuer) -> None:
    forged = _reheader(issuer.token(["x"]), alg="ES256")
    with pytest.raises(TokenError, match="does not match its key"):
        issuer.verifier().verify(forged)


def test_wrong_typ_and_missing_kid_are_refused(issuer: TestIssuer) -> None:
    with pytest.raises(TokenError, match="typ"):
        issuer.verifier().verify(issuer.token(["x"], headers={"typ": "JWT"}))
    with pytest.raises(TokenError, match="key id"):
        issuer.verifier().verify(_reheader(issuer.token(["x"]), kid=None))


def test_malformed_tokens_are_refused(issuer: TestIssuer) -> None:
    for junk in ("abc", "a.b.c", "", "....", issuer.token(["x"])[:-10] + "A" * 10):
        with pytest.raises(TokenError):
            issuer.verifier().verify(junk)


def test_unknown_kid_refetches_at_most_once_per_interval(
    issuer: TestIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = 0

    def fetch() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        return issuer.jwks()

    verifier = TokenVerifier(issuer.policy(), fetch, refetch_interval=10)
    verifier.verify(issuer.token(["x"]))
    assert calls == 1
    for i in range(50):
        with pytest.raises(TokenError, match="unknown key"):
            verifier.verify(issuer.token(["x"], headers={"kid": f"forged-{i}"}))
    assert calls == 1  # fetched once at start; forged kids within the interval fetch nothing
    now = time.monotonic()
    monkeypatch.setattr(tokens_mod.time, "monotonic", lambda: now + 11)
    with pytest.raises(TokenError, match="unknown key"):
        verifier.verify(issuer.token(["x"], headers={"kid": "forged-late"}))
    assert calls == 2


def test_rotated_key_is_picked_up_and_old_tokens_stay_valid() -> None:
    old, new = TestIssuer(), TestIssuer()
    published = {"keys": old.jwks()["keys"]}
    verifier = TokenVerifier(old.policy(), lambda: published, refetch_interval=0)
    old_token = old.token(["x"])
    verifier.verify(old_token)
    published = {"keys": old.jwks()["keys"] + new.jwks()["keys"]}  # rotation publishes both
    assert verifier.verify(new.token(["x"])).scopes == {"x"}
    verifier._core.cache.clear()
    assert verifier.verify(old_token).scopes == {"x"}


def test_unreachable_jwks_is_503_not_401(issuer: TestIssuer) -> None:
    def fetch() -> dict[str, Any]:
        raise ConnectionRefusedError

    with pytest.raises(KeysUnavailable) as err:
        TokenVerifier(issuer.policy(), fetch).verify(issuer.token(["x"]))
    assert token_problem(err.value).status == 503


def test_cache_is_bounded_and_never_serves_past_exp(
    issuer: TestIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    verifier = issuer.verifier(cache_size=2)
    tokens = [issuer.token(["x"], jti=str(i)) for i in range(3)]
    for t in tokens:
        verifier.verify(t)
    assert len(verifier._core.cache) == 2
    assert verifier._core.cached(tokens[2]) is not None
    later = time.time() + issuer.lifetime + 1
    monkeypatch.setattr(tokens_mod.time, "time", lambda: later)
    assert verifier._core.cached(tokens[2]) is None


async def test_async_verifier_shares_one_fetch_among_concurrent_callers(
    issuer: TestIssuer,
) -> None:
    calls = 0

    async def fetch() -> dict[str, Any]:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0)
        return issuer.jwks()

    verifier = tokens_mod.AsyncTokenVerifier(issuer.policy(), fetch)
    results = await asyncio.gather(*(verifier.verify(issuer.token(["x"])) for _ in range(20)))
    assert calls == 1
    assert all(r.scopes == {"x"} for r in results)
    token = issuer.token(["y"])
    assert verifier.cached(token) is None
    await verifier.verify(token)
    assert verifier.cached(token) is not None


def test_bearer_header_parsing_and_rfc6750_challenges() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("bearer  abc ") == "abc"
    with pytest.raises(MissingToken):
        bearer_token(None)
    with pytest.raises(TokenError):
        bearer_token("Basic dXNlcg==")
    missing = token_problem(MissingToken("no access token"))
    assert missing.status == 401
    assert missing.headers["WWW-Authenticate"] == 'Bearer realm="portico"'
    invalid = token_problem(TokenError("the token has expired"))
    assert 'error="invalid_token"' in invalid.headers["WWW-Authenticate"]
    scope = token_problem(InsufficientScope("lacks", scope="catalog:write"))
    assert scope.status == 403
    assert 'error="insufficient_scope"' in scope.headers["WWW-Authenticate"]
    assert 'scope="catalog:write"' in scope.headers["WWW-Authenticate"]
