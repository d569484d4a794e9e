"""API keys at the gateway (ADR 0036): checked against the cache of identity's feed, scopes like
a token's, the key's own rate-limit class, revocation seen within the documented bound, the
key swapped for its access token on the way upstream."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from typing import Any

import pytest

from gateway.apikeys import ApiKeyCache, ApiKeySettings, KeyClaims
from gateway.app import STATE
from gateway.pipeline.auth import Auth, KeyAuth
from gateway.transport import MockResponse, OutboundRequest
from tests.support.tokens import TestIssuer

from .conftest import IDENTITY, SVC, FakeUpstreams, GatewayClient

FEED = "/internal/v1/api-keys"
SECRET = "s" * 40
REFRESH, TIMEOUT = 0.3, 0.2
BOUND = REFRESH + TIMEOUT  # the documented revocation bound for these settings


class Identity:
    """identity's side of the key feed and the key-for-token exchange, in memory."""

    def __init__(self, issuer: TestIssuer, upstreams: FakeUpstreams) -> None:
        self.issuer = issuer
        self.keys: dict[str, dict[str, Any]] = {}
        self.secrets: dict[str, str] = {}
        self.exchanges = 0
        self.feeds = 0
        upstreams.on(IDENTITY, FEED, self.feed)
        upstreams.on(IDENTITY, FEED + "/token", self.exchange)

    def create(self, scopes: str, rate_class: str = "authenticated", owner: str = "u1") -> str:
        key_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
        self.keys[key_id] = {
            "id": key_id,
            "hash": hashlib.sha256(secret.encode()).hexdigest(),
            "scopes": scopes.split(),
            "class": rate_class,
            "subject": owner,
            "client_id": f"apikey:{key_id}",
            "version": 1,
            "revoked": False,
        }
        self.secrets[key_id] = secret
        return f"pk_{key_id}_{secret}"

    def revoke(self, key: str) -> None:
        doc = self.keys[key.split("_")[1]]
        doc.update(revoked=True, version=doc["version"] + 1)

    def feed(self, request: OutboundRequest) -> MockResponse:
        self.feeds += 1
        if request.headers.get("X-Internal-Token") != SECRET:
            return MockResponse(404, json={"status": 404})
        return MockResponse(json={"keys": list(self.keys.values())})

    def exchange(self, request: OutboundRequest) -> MockResponse:
        self.exchanges += 1
        value = str(request.headers.get("X-API-Key", ""))
        doc = self.keys.get(value.split("_")[1]) if value.count("_") >= 2 else None
        if doc is None or doc["revoked"]:
            return MockResponse(401, json={"status": 401})
        token = self.issuer.token(doc["scopes"], sub=doc["subject"], client_id=doc["client_id"])
        return MockResponse(json={"access_token": token, "expires_in": 300, "version": 1})


@pytest.fixture
def identity(
    issuer: TestIssuer, upstreams: FakeUpstreams, monkeypatch: pytest.MonkeyPatch
) -> Identity:
    monkeypatch.setenv("GATEWAY_API_KEYS_URL", IDENTITY + FEED)
    monkeypatch.setenv("GATEWAY_API_KEYS_SECRET", SECRET)
    monkeypatch.setenv("GATEWAY_API_KEYS_REFRESH", str(REFRESH))
    monkeypatch.setenv("GATEWAY_API_KEYS_TIMEOUT", str(TIMEOUT))
    monkeypatch.setenv("GATEWAY_API_KEYS_MAX_STALE", "5")
    return Identity(issuer, upstreams)


async def _problem(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/problem+json"
    doc: dict[str, Any] = await resp.json()
    assert doc["status"] == status
    assert "traceback" not in str(doc).lower()
    return doc


async def test_a_good_key_reaches_the_upstream_as_its_token(
    identity: Identity, gateway: GatewayClient, upstreams: FakeUpstreams
) -> None:
    key = identity.create("items:read")
    client = await gateway()
    for _ in range(3):
        resp = await client.get("/items", headers={"X-API-Key": key})
        assert resp.status == 200, await resp.text()
    sent = upstreams.seen(SVC)[-1].headers
    assert "X-API-Key" not in sent and key not in str(sent)
    token = str(sent["Authorization"]).removeprefix("Bearer ")
    claims = identity.issuer.verifier().verify(token)
    assert claims.subject == "u1" and claims.scopes == {"items:read"}
    assert identity.exchanges == 1  # one exchange per key, then the cached token


@pytest.mark.parametrize(
    "mangle",
    [
        lambda key: key[:-4] + "AAAA",  # wrong secret
        lambda key: "pk_" + "0" * 16 + "_" + key.split("_", 2)[2],  # unknown id
        lambda key: "nonsense",
        lambda key: "pk_" + "a" * 500,
    ],
    ids=["wrong-secret", "unknown-id", "malformed", "oversized"],
)
async def test_a_bad_key_is_a_401_shaped_like_a_bad_token(
    identity: Identity, gateway: GatewayClient, mangle: Any
) -> None:
    key = identity.create("items:read")
    client = await gateway()
    resp = await client.get("/items", headers={"X-API-Key": mangle(key)})
    doc = await _problem(resp, 401)
    assert doc["detail"] == "the API key is invalid"  # the same words whatever was wrong
    assert resp.headers["WWW-Authenticate"].startswith('Bearer realm="portico"')
    token_resp = await client.get("/items", headers={"Authorization": "Bearer nope"})
    token_doc = await _problem(token_resp, 401)
    assert set(doc) == set(token_doc)  # the same problem shape as a bad token
    assert identity.exchanges == 0


async def test_the_routes_scopes_are_checked_like_a_tokens(
    identity: Identity, gateway: GatewayClient
) -> None:
    reader = identity.create("items:read")
    client = await gateway()
    resp = await client.post("/items", headers={"X-API-Key": reader}, json={})
    await _problem(resp, 403)
    assert 'error="insufficient_scope"' in resp.headers["WWW-Authenticate"]


async def test_both_a_token_and_a_key_is_a_400(
    identity: Identity, gateway: GatewayClient, issuer: TestIssuer
) -> None:
    key = identity.create("items:read")
    client = await gateway()
    headers = {"X-API-Key": key, "Authorization": f"Bearer {issuer.token(['items:read'])}"}
    doc = await _problem(await client.get("/items", headers=headers), 400)
    assert "not both" in doc["detail"]


async def test_a_revoked_key_is_refused_within_the_documented_bound(
    identity: Identity, gateway: GatewayClient
) -> None:
    key = identity.create("items:read")
    client = await gateway()
    assert (await client.get("/items", headers={"X-API-Key": key})).status == 200
    identity.revoke(key)
    deadline = time.monotonic() + BOUND
    status = 200
    while status == 200 and time.monotonic() < deadline:
        status = (await client.get("/items", headers={"X-API-Key": key})).status
        if status == 200:
            await asyncio.sleep(0.02)
    assert status == 401


async def test_tokens_still_work_and_run_no_key_code(
    identity: Identity, gateway: GatewayClient, issuer: TestIssuer
) -> None:
    client = await gateway()
    token = issuer.token(["items:read"])
    resp = await client.get("/items", headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 200
    assert identity.exchanges == 0


async def test_without_the_setting_routes_bind_the_plain_auth_policy(
    gateway: GatewayClient, upstreams: FakeUpstreams, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("GATEWAY_API_KEYS_URL", raising=False)
    client = await gateway()
    resp = await client.get("/items", headers={"X-API-Key": "pk_0123456789abcdef_x"})
    await _problem(resp, 401)  # no token: the key means nothing here
    assert not any(r.origin == IDENTITY and FEED in r.target for r in upstreams.transport.requests)
    assert _auth_policies(client) == {Auth}


def _auth_policies(client: Any) -> set[type]:
    chains = client.app[STATE].state.pipeline.chains.values()
    return {type(p) for chain in chains for p in chain.policies if isinstance(p, Auth)}


async def test_with_the_setting_routes_that_require_auth_bind_key_auth(
    identity: Identity, gateway: GatewayClient
) -> None:
    client = await gateway()
    assert _auth_policies(client) == {KeyAuth}


def _limited(**classes: Any) -> dict[str, Any]:
    return {
        "rate_limits": {
            "consumer_classes": {"partners": {"client_ids": ["partner-app"]}},
            "policies": {
                "p": {"limit": 100, "period": 60, "burst": 100, "classes": classes},
            },
        }
    }


async def test_a_keys_rate_limit_class_selects_its_quota(
    identity: Identity, gateway: GatewayClient
) -> None:
    from .conftest import BASE

    routes = [dict(r, rate_limit="p") if r["name"] == "items.list" else r for r in BASE["routes"]]
    partner = identity.create("items:read", rate_class="partners", owner="p1")
    plain = identity.create("items:read", owner="u2")
    client = await gateway(routes=routes, **_limited(partners={"limit": 1, "period": 60}))
    first = await client.get("/items", headers={"X-API-Key": partner})
    assert first.status == 200
    assert first.headers["RateLimit-Policy"].startswith('"p.partners"')
    await _problem(await client.get("/items", headers={"X-API-Key": partner}), 429)
    other = await client.get("/items", headers={"X-API-Key": plain})
    assert other.status == 200 and other.headers["RateLimit-Policy"].startswith('"p"')


async def test_the_cache_refuses_with_503_past_max_stale() -> None:
    now = [0.0]
    settings = ApiKeySettings(url="http://x/f", secret=SECRET, refresh=1, timeout=1, max_stale=5)
    feed: list[dict[str, Any]] = []

    async def fetch() -> list[dict[str, Any]]:
        return feed

    cache = ApiKeyCache(settings, fetch_keys=fetch, clock=lambda: now[0])
    from chassis import TokenError

    with pytest.raises(TokenError) as before:
        cache.check("pk_0123456789abcdef_secret")
    assert before.value.status == 503
    await cache.refresh()
    with pytest.raises(TokenError) as unknown:
        cache.check("pk_0123456789abcdef_secret")
    assert unknown.value.status == 401
    now[0] = 6.0
    with pytest.raises(TokenError) as stale:
        cache.check("pk_0123456789abcdef_secret")
    assert stale.value.status == 503


def test_settings_are_validated() -> None:
    bad = ApiKeySettings(url="http://x/f", secret="short", refresh=10, timeout=5, max_stale=12)
    assert len(bad.problems()) == 2
    assert ApiKeySettings().problems() == []


def test_key_claims_are_claims() -> None:
    claims = KeyClaims({}, "u", "apikey:1", frozenset({"a"}), 0.0, rate_class="gold")
    assert claims.rate_class == "gold" and issubclass(KeyAuth, Auth)


async def test_concurrent_requests_of_a_key_share_one_exchange() -> None:
    settings = ApiKeySettings(url="http://x/f", secret=SECRET)
    key_id, secret = "0123456789abcdef", secrets.token_urlsafe(32)
    doc = {
        "id": key_id,
        "hash": hashlib.sha256(secret.encode()).hexdigest(),
        "scopes": ["a"],
        "class": "authenticated",
        "subject": "u",
        "client_id": f"apikey:{key_id}",
        "version": 1,
        "revoked": False,
    }
    calls = []
    release = asyncio.Event()

    async def fetch() -> list[dict[str, Any]]:
        return [doc]

    async def exchange(value: str) -> tuple[str, float]:
        calls.append(value)
        await release.wait()
        return "a.b.c", 300.0

    cache = ApiKeyCache(settings, fetch_keys=fetch, exchange=exchange)
    await cache.refresh()
    key = f"pk_{key_id}_{secret}"
    entry = cache.check(key)
    waiters = [asyncio.ensure_future(cache.exchange(entry, key)) for _ in range(5)]
    await asyncio.sleep(0)
    waiters[0].cancel()  # one caller goes away: the others still get the token
    release.set()
    results = await asyncio.gather(*waiters[1:])
    assert results == ["a.b.c"] * 4 and len(calls) == 1
    assert cache.token_for(entry) == "a.b.c"
    doc["version"] = 2  # rotated: the token held for version 1 is dropped
    await cache.refresh()
    assert cache.token_for(cache.check(key)) is None
