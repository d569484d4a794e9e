"""The response cache policy (gateway.pipeline.cache): through the front server's fast path
with test transports, and through the aiohttp adapter with a mock upstream."""

from __future__ import annotations

import asyncio
import copy
import time
from email.utils import formatdate
from typing import Any

import pytest

from chassis import ConfigError
from chassis.messaging import Event
from gateway.app import STATE
from gateway.config import parse_config
from gateway.pipeline.cache import Cache, CacheRuntime
from gateway.pipeline.cache_store import Entry, MemoryStore, decode, encode
from gateway.transport import MockResponse, OutboundRequest, UpstreamUnavailable
from tests.support.fastpath import FastPath

from .conftest import BASE, SVC, FakeUpstreams, GatewayClient

GET = b"GET /public/x HTTP/1.1\r\nHost: gw\r\n\r\n"


def answer(body: bytes = b'{"n":1}', status: int = 200, reason: str = "OK", **fields: str) -> bytes:
    head = f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
    for name, value in fields.items():
        head += f"{name.replace('_', '-')}: {value}\r\n"
    if status != 304:
        head += f"Content-Length: {len(body)}\r\n"
    return head.encode() + b"\r\n" + (body if status != 304 else b"")


def _raw(cache: dict[str, Any] | None = None, route: int = 0) -> dict[str, Any]:
    raw = copy.deepcopy(BASE)
    raw["routes"][route]["cache"] = cache if cache is not None else {"ttl": 60}
    return raw


def config(cache: dict[str, Any] | None = None, route: int = 0, **changes: Any) -> Any:
    raw = _raw(cache, route)
    raw.update(changes)
    return parse_config(raw, environ={})


def with_header(request: bytes, field: str) -> bytes:
    return request.replace(b"\r\n\r\n", f"\r\n{field}\r\n\r\n".encode(), 1)


# --- the fast path ------------------------------------------------------------------------------


async def test_miss_then_hit_with_age_without_the_upstream_and_inline() -> None:
    async with FastPath(config(), "svc", SVC) as fast:
        status, headers, body = await fast.request(GET, answer(Cache_Control="max-age=60"))
        assert (status, headers["x-cache"], body) == (200, "MISS", b'{"n":1}')
        status, headers, body = await fast.request(GET, answer(b"other"))
        assert (status, headers["x-cache"], body) == (200, "HIT", b'{"n":1}')
        assert headers["age"] == "0" and headers["cache-control"] == "max-age=60"
        assert headers["content-length"] == "7" and "x-request-id" in headers
        assert len(fast.upstream_requests) == 1
        # a HEAD is answered from the GET's entry, without a body
        status, headers, body = await fast.request(GET.replace(b"GET", b"HEAD", 1))
        assert (status, headers["x-cache"], body) == (200, "HIT", b"")
        assert len(fast.upstream_requests) == 1


async def test_the_age_grows_and_an_expired_entry_is_fetched_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = time.time()
    monkeypatch.setattr("gateway.pipeline.cache.time.time", lambda: now)
    async with FastPath(config(), "svc", SVC) as fast:
        await fast.request(GET, answer(Cache_Control="max-age=10", Age="2"))
        now += 5
        _, headers, _ = await fast.request(GET)
        assert (headers["x-cache"], headers["age"]) == ("HIT", "7")
        now += 4
        _, headers, _ = await fast.request(GET, answer(b"new"))
        assert headers["x-cache"] == "MISS" and len(fast.upstream_requests) == 2


async def test_conditional_requests_get_304_from_the_cache() -> None:
    modified = formatdate(time.time() - 3600, usegmt=True)
    async with FastPath(config(), "svc", SVC) as fast:
        await fast.request(GET, answer(ETag='"v1"', Last_Modified=modified))
        status, headers, body = await fast.request(with_header(GET, 'If-None-Match: "v0", "v1"'))
        assert (status, headers["etag"], headers["x-cache"], body) == (304, '"v1"', "HIT", b"")
        status, _, _ = await fast.request(with_header(GET, 'If-None-Match: W/"v1"'))
        assert status == 304  # weak comparison
        status, _, body = await fast.request(with_header(GET, 'If-None-Match: "v2"'))
        assert (status, body) == (200, b'{"n":1}')
        later = formatdate(time.time(), usegmt=True)
        status, _, _ = await fast.request(with_header(GET, f"If-Modified-Since: {later}"))
        assert status == 304
        earlier = formatdate(time.time() - 7200, usegmt=True)
        status, _, _ = await fast.request(with_header(GET, f"If-Modified-Since: {earlier}"))
        assert status == 200
        assert len(fast.upstream_requests) == 1


@pytest.mark.parametrize(
    ("settings", "fields"),
    [
        ({}, {"Cache_Control": "no-store"}),
        ({}, {"Vary": "*"}),
        ({}, {"Set_Cookie": "a=b"}),
        ({"shared": True}, {"Cache_Control": "private, max-age=60"}),
        ({"statuses": [200]}, {"Cache_Control": "max-age=60", "status": 404}),
        ({"max_entry_bytes": 3}, {}),
    ],
)
async def test_answers_that_are_never_stored(settings: dict[str, Any], fields: Any) -> None:
    fields = dict(fields)
    status = fields.pop("status", 200)
    reply = answer(status=status, reason="X", **fields)
    async with FastPath(config({"ttl": 60, **settings}), "svc", SVC) as fast:
        _, headers, _ = await fast.request(GET, reply)
        assert headers["x-cache"] == "MISS"
        _, headers, _ = await fast.request(GET, reply)
        assert headers["x-cache"] == "MISS"
    assert len(fast.upstream_requests) == 2


async def test_vary_fields_are_part_of_the_entry() -> None:
    reply = answer(Vary="Accept-Language", Cache_Control="max-age=60")
    async with FastPath(config(), "svc", SVC) as fast:
        await fast.request(with_header(GET, "Accept-Language: fr"), reply)
        _, headers, _ = await fast.request(with_header(GET, "Accept-Language: fr"))
        assert headers["x-cache"] == "HIT"
        _, headers, _ = await fast.request(with_header(GET, "Accept-Language: de"), reply)
        assert headers["x-cache"] == "MISS"
    assert len(fast.upstream_requests) == 2


async def test_request_no_store_or_no_cache_bypasses_the_cache() -> None:
    async with FastPath(config(), "svc", SVC) as fast:
        await fast.request(GET)
        _, headers, _ = await fast.request(with_header(GET, "Cache-Control: no-cache"))
        assert headers["x-cache"] == "BYPASS"
        _, headers, _ = await fast.request(GET)
        assert headers["x-cache"] == "HIT"
    assert len(fast.upstream_requests) == 2


async def test_an_expired_entry_is_revalidated_upstream_and_a_304_refreshes_it() -> None:
    async with FastPath(config(), "svc", SVC) as fast:
        await fast.request(GET, answer(ETag='"v1"', Cache_Control="no-cache"))
        status, headers, body = await fast.request(
            GET, answer(status=304, reason="Not Modified", ETag='"v1"', Cache_Control="no-cache")
        )
        assert (status, headers["x-cache"], body) == (200, "HIT", b'{"n":1}')
        assert b'If-None-Match: "v1"' in fast.upstream_requests[1]
        # the client's own validator still gets its 304 after our revalidation
        status, _, _ = await fast.request(
            with_header(GET, 'If-None-Match: "v1"'),
            answer(status=304, reason="Not Modified", ETag='"v1"'),
        )
        assert status == 304
        # a changed representation replaces the entry
        _, headers, body = await fast.request(
            GET, answer(b"v2", ETag='"v2"', Cache_Control="no-cache")
        )
        assert (headers["x-cache"], body) == ("MISS", b"v2")
        assert len(fast.upstream_requests) == 4


async def test_stale_if_error_serves_the_old_entry_when_the_upstream_fails(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = time.time()
    monkeypatch.setattr("gateway.pipeline.cache.time.time", lambda: now)
    async with FastPath(config({"ttl": 10, "stale_if_error": 60}), "svc", SVC) as fast:
        await fast.request(GET)
        now += 30
        failing = answer(b"down", status=503, reason="Unavailable")
        status, headers, body = await fast.request(GET, failing)
        assert (status, headers["x-cache"], body) == (200, "STALE", b"{}")
        assert headers["age"] == "30"
        now += 60  # past the grace: the failure is the answer
        status, headers, _ = await fast.request(GET, failing)
        assert (status, headers["x-cache"]) == (503, "MISS")


async def test_must_revalidate_answers_are_never_served_stale(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    now = time.time()
    monkeypatch.setattr("gateway.pipeline.cache.time.time", lambda: now)
    async with FastPath(config(), "svc", SVC) as fast:
        await fast.request(GET, answer(Cache_Control="max-age=5, must-revalidate"))
        now += 10
        status, _, _ = await fast.request(GET, answer(status=502, reason="Bad"))
        assert status == 502


# --- through the aiohttp adapter, with a mock upstream ------------------------------------------


async def test_stale_if_error_when_the_upstream_is_unreachable_or_slow(
    gateway: GatewayClient, upstreams: FakeUpstreams, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = time.time()
    monkeypatch.setattr("gateway.pipeline.cache.time.time", lambda: now)
    raw = _raw({"ttl": 1, "stale_if_error": 300}, route=4)  # "slow": a 0.2 s timeout
    raw["routes"][0]["cache"] = {"ttl": 1}
    client = await gateway(routes=raw["routes"])
    first = await client.get("/public/a")
    await client.get("/slow")
    assert first.headers["X-Cache"] == "MISS"
    now += 5

    def refused(_request: OutboundRequest) -> MockResponse:
        raise UpstreamUnavailable("connection refused")

    async def slow(_request: OutboundRequest) -> MockResponse:
        await asyncio.sleep(1)
        return MockResponse(json={})

    upstreams.on(SVC, "/public/a", refused)
    upstreams.on(SVC, "/slow", slow)
    resp = await client.get("/public/a")
    assert (resp.status, resp.headers["X-Cache"]) == (200, "STALE")
    assert (await resp.json())["target"] == "/public/a"
    resp = await client.get("/slow")  # 504 from the gateway: the stale entry instead
    assert (resp.status, resp.headers["X-Cache"]) == (200, "STALE")


async def test_authenticated_routes_are_isolated_per_consumer(
    gateway: GatewayClient, upstreams: FakeUpstreams, issuer: Any
) -> None:
    raw = _raw({"ttl": 60}, route=3)  # items.get: a token with items:read
    raw["routes"][1]["cache"] = {"ttl": 60, "shared": True}  # items.list: shared
    client = await gateway(routes=raw["routes"])
    alice = issuer.auth(["items:read"], sub="alice")
    bob = issuer.auth(["items:read"], sub="bob")
    for who in (alice, alice, bob, bob):
        await client.get("/items/1", headers=who)
    assert len(upstreams.seen()) == 2  # one entry each

    def public(_request: OutboundRequest) -> MockResponse:
        return MockResponse(json={"items": []}, headers={"Cache-Control": "public, max-age=60"})

    def private(_request: OutboundRequest) -> MockResponse:
        return MockResponse(json={"me": 1}, headers={"Cache-Control": "private, max-age=60"})

    upstreams.on(SVC, "/items", public)
    for who in (alice, bob):
        resp = await client.get("/items", headers=who)
    assert resp.headers["X-Cache"] == "HIT" and len(upstreams.seen()) == 3  # shared
    upstreams.on(SVC, "/items", private)
    for who in (alice, bob):
        resp = await client.get("/items?private=1", headers=who)
        assert resp.headers["X-Cache"] == "MISS"  # private: never shared
    assert len(upstreams.seen()) == 5


async def test_a_shared_route_stores_authorized_answers_only_when_they_say_public(
    gateway: GatewayClient, upstreams: FakeUpstreams, issuer: Any
) -> None:
    raw = _raw({"ttl": 60, "shared": True}, route=1)
    client = await gateway(routes=raw["routes"])
    token = issuer.auth(["items:read"])
    for _ in range(2):
        resp = await client.get("/items", headers=token)  # no Cache-Control: not shared
        assert resp.headers["X-Cache"] == "MISS"


async def test_concurrent_misses_for_one_key_make_one_upstream_call(
    gateway: GatewayClient, upstreams: FakeUpstreams
) -> None:
    gate = asyncio.Event()
    arrived = asyncio.Event()
    calls = 0

    async def gated(_request: OutboundRequest) -> MockResponse:
        nonlocal calls
        calls += 1
        arrived.set()
        await gate.wait()
        return MockResponse(json={"n": calls}, headers={"Cache-Control": "max-age=60"})

    upstreams.on(SVC, "/public/hot", gated)
    client = await gateway(routes=_raw({"ttl": 60})["routes"])
    requests = [asyncio.ensure_future(client.get("/public/hot")) for _ in range(5)]
    await arrived.wait()
    for _ in range(20):  # let the other four reach the cache and wait there
        await asyncio.sleep(0)
    gate.set()
    answers = await asyncio.gather(*requests)
    assert calls == 1
    assert sorted(r.headers["X-Cache"] for r in answers) == ["HIT"] * 4 + ["MISS"]
    assert [await r.json() for r in answers] == [{"n": 1}] * 5


async def test_waiting_requests_go_upstream_themselves_when_the_answer_cannot_be_stored(
    gateway: GatewayClient, upstreams: FakeUpstreams
) -> None:
    gate = asyncio.Event()
    calls = 0

    async def gated(_request: OutboundRequest) -> MockResponse:
        nonlocal calls
        calls += 1
        await gate.wait()
        return MockResponse(json={}, headers={"Cache-Control": "no-store"})

    upstreams.on(SVC, "/public/hot", gated)
    client = await gateway(routes=_raw({"ttl": 60})["routes"])
    requests = [asyncio.ensure_future(client.get("/public/hot")) for _ in range(3)]
    for _ in range(50):
        await asyncio.sleep(0)
    gate.set()
    answers = await asyncio.gather(*requests)
    assert [r.status for r in answers] == [200] * 3 and calls == 3


async def test_an_unreachable_redis_never_fails_a_request(
    gateway: GatewayClient, upstreams: FakeUpstreams
) -> None:
    raw = _raw({"ttl": 60})
    rate_limits = {"redis_url": "redis://127.0.0.1:1", "redis_connect_timeout": 0.05}
    client = await gateway(routes=raw["routes"], rate_limits=rate_limits)
    store = client.app[STATE].state.pipeline.context.resources["cache"].store
    assert type(store).__name__ == "RedisStore"
    for _ in range(2):
        resp = await client.get("/public/x")
        assert (resp.status, resp.headers["X-Cache"]) == (200, "BYPASS")
    assert len(upstreams.seen()) == 2


async def test_entries_survive_a_reload(gateway: GatewayClient, upstreams: FakeUpstreams) -> None:
    from gateway.app import RELOADER

    raw = _raw({"ttl": 60})
    client = await gateway(routes=raw["routes"])
    await client.get("/public/x")
    assert await client.app[RELOADER].reload(parse_config(raw, environ={}))
    resp = await client.get("/public/x")
    assert resp.headers["X-Cache"] == "HIT" and len(upstreams.seen()) == 1


async def test_an_aggregate_part_is_served_from_the_cache(
    gateway: GatewayClient, upstreams: FakeUpstreams, issuer: Any
) -> None:
    raw = _raw({"ttl": 60}, route=3)
    aggregates = [
        {
            "name": "both",
            "path": "/both/{id}",
            "parts": [{"name": "item", "path": "/items/{id}"}],
        }
    ]
    client = await gateway(routes=raw["routes"], aggregates=aggregates)
    token = issuer.auth(["items:read"])
    first = await (await client.get("/both/1", headers=token)).json()
    second = await (await client.get("/both/1", headers=token)).json()
    assert first == second and first["item"]["target"] == "/items/1"
    assert len(upstreams.seen()) == 1


# --- purges -------------------------------------------------------------------------------------


async def test_an_event_purges_the_path_of_its_data_and_lists_whole(
    gateway: GatewayClient, upstreams: FakeUpstreams, issuer: Any
) -> None:
    raw = _raw({"ttl": 60, "purge_on": ["item.updated"]}, route=3)
    raw["routes"][1]["cache"] = {"ttl": 60, "purge_on": ["item.updated", "item.created"]}
    client = await gateway(routes=raw["routes"])
    token = issuer.auth(["items:read"])
    for path in ("/items/1", "/items/1?x=1", "/items/2", "/items", "/items?page=2"):
        await client.get(path, headers=token)
    runtime: CacheRuntime = client.app[STATE].state.pipeline.context.resources["cache"]
    assert len(runtime.store) == 5
    runtime.on_event(Event("item.updated", {"id": "1"}))
    await asyncio.gather(*runtime.tasks)
    hits = {}
    for path in ("/items/1", "/items/1?x=1", "/items/2", "/items", "/items?page=2"):
        hits[path] = (await client.get(path, headers=token)).headers["X-Cache"]
    assert hits == {
        "/items/1": "MISS",
        "/items/1?x=1": "MISS",
        "/items/2": "HIT",
        "/items": "MISS",
        "/items?page=2": "MISS",
    }
    runtime.on_event(Event("item.deleted", {"id": "2"}))  # not named: nothing purged
    await asyncio.gather(*runtime.tasks)
    assert (await client.get("/items/2", headers=token)).headers["X-Cache"] == "HIT"


# --- invalidation by unsafe requests (RFC 9111 4.4) -----------------------------------------------


async def test_a_successful_post_invalidates_its_target_on_the_fast_path() -> None:
    post = b"POST /public/x HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\n\r\n{}"
    async with FastPath(config(), "svc", SVC) as fast:  # public: GET and POST on /public/*
        await fast.request(GET, answer(Cache_Control="max-age=60"))
        assert (await fast.request(GET))[1]["x-cache"] == "HIT"
        status, _, _ = await fast.request(post, answer(b"no", 409, "Conflict"))
        assert status == 409
        assert (await fast.request(GET))[1]["x-cache"] == "HIT"  # an error: nothing changed
        status, _, _ = await fast.request(post, answer(b"{}", 201, "Created"))
        assert status == 201
        status, headers, body = await fast.request(GET, answer(b'{"n":2}'))
        assert (headers["x-cache"], body) == ("MISS", b'{"n":2}')


async def test_a_write_on_another_route_invalidates_the_cached_path_and_its_location(
    gateway: GatewayClient, upstreams: FakeUpstreams, issuer: Any
) -> None:
    raw = _raw({"ttl": 60, "shared": True}, route=3)  # items.get
    raw["routes"][1]["cache"] = {"ttl": 60, "shared": True}  # items.list
    raw["routes"].append(
        {
            "name": "items.update",
            "methods": ["PATCH", "DELETE"],
            "path": "/items/{id}",
            "upstream": "svc",
            "auth": {"scopes": ["items:write"]},
        }
    )
    client = await gateway(routes=raw["routes"])
    read, write = issuer.auth(["items:read"]), issuer.auth(["items:write"])

    def public(_request: OutboundRequest) -> MockResponse:
        return MockResponse(json={"n": 1}, headers={"Cache-Control": "public, max-age=60"})

    for path in ("/items/1", "/items/2", "/items/3", "/items"):
        upstreams.on(SVC, path, public)

    async def labels() -> list[str]:
        paths = ("/items/1", "/items/1?v=1", "/items/2", "/items/3", "/items")
        return [(await client.get(p, headers=read)).headers["X-Cache"] for p in paths]

    await labels()
    assert await labels() == ["HIT"] * 5
    assert (await client.patch("/items/1", json={}, headers=write)).status == 200
    assert await labels() == ["MISS", "MISS", "HIT", "HIT", "HIT"]  # the path's, any query

    def created(_request: OutboundRequest) -> MockResponse:
        return MockResponse(status=201, json={}, headers={"Location": "/items/2"})

    upstreams.on(SVC, "/items", created)
    assert (await client.post("/items", json={}, headers=write)).status == 201
    upstreams.on(SVC, "/items", public)
    assert await labels() == ["HIT", "HIT", "MISS", "HIT", "MISS"]  # its target and Location

    def elsewhere(_request: OutboundRequest) -> MockResponse:
        return MockResponse(
            status=201, json={}, headers={"Content-Location": "http://other.test/items/3"}
        )

    upstreams.on(SVC, "/items", elsewhere)
    await client.post("/items", json={}, headers=write)
    upstreams.on(SVC, "/items", public)
    assert (await labels())[3] == "HIT"  # another origin's URL is not this cache's to drop


def test_the_invalidation_binds_only_to_unsafe_routes_of_a_config_that_caches() -> None:
    from gateway.app import create_app
    from gateway.pipeline.cache import CacheInvalidation

    def bound(cfg: Any) -> dict[str, bool]:
        chains = create_app(cfg)[STATE].state.pipeline.chains
        return {
            name: any(isinstance(p, CacheInvalidation) for p in chain.policies)
            for name, chain in chains.items()
        }

    assert not any(bound(parse_config(copy.deepcopy(BASE), environ={})).values())
    on = bound(config({"ttl": 5}, route=3))
    assert on["items.create"] and on["public"] and on["upload"]
    assert not on["items.get"] and not on["items.list"]


# --- pieces ------------------------------------------------------------------------------------


def _entry(body: bytes) -> Entry:
    return Entry(200, [("ETag", '"a"')], body, time.time(), 60.0, keep=120.0)


def test_the_memory_store_evicts_the_least_recently_used_within_its_budget() -> None:
    store = MemoryStore(max_bytes=1200)  # two entries of ~510 bytes (body, fields, overhead)
    store.put_now("a", "r", "/a", _entry(b"x" * 300))
    store.put_now("b", "r", "/b", _entry(b"x" * 300))
    assert store.get_now("a") is not None  # a is now the most recently used
    store.put_now("c", "r", "/c", _entry(b"x" * 300))
    assert store.get_now("b") is None and store.get_now("a") is not None
    assert store.used <= 1200
    store.put_now("big", "r", "/big", _entry(b"x" * 2000))  # beyond the budget: not stored
    assert store.get_now("big") is None and len(store) == 2
    assert store.purge_now("r", None) == 2 and store.used == 0


def test_an_entry_survives_encoding() -> None:
    entry = Entry(
        200,
        [("ETag", '"a"'), ("Vary", "Accept")],
        b"\x00body",
        1.5,
        60.0,
        5.0,
        2.0,
        (("accept", "json"),),
        '"a"',
        None,
        99.0,
    )
    back = decode(encode(entry))
    assert (back.headers, back.body, back.vary, back.keep) == (
        entry.headers,
        entry.body,
        entry.vary,
        entry.keep,
    )


def test_cache_settings_are_checked_by_key_path() -> None:
    with pytest.raises(ConfigError, match=r"routes\[0\]\.cache\.ttl"):
        config({"ttl": "soon"})
    with pytest.raises(ConfigError, match=r"routes\[0\]\.cache\.purge_on\[0\]"):
        config({"purge_on": ["bad event!"]})
    with pytest.raises(ConfigError, match=r"routes\[0\]\.cache: must be a mapping"):
        config(5)  # type: ignore[arg-type]
    cfg = config({"ttl": 5, "shared": True})
    (ref,) = cfg.routes[0].policies
    assert ref.cls is Cache and ref.settings["ttl"] == 5 and ref.settings["shared"]


def test_a_route_without_get_binds_no_cache() -> None:
    cfg = config({"ttl": 5}, route=2)  # items.create: POST only
    from gateway.app import create_app

    app = create_app(cfg)
    chain = app[STATE].state.pipeline.chains["items.create"]
    assert not any(isinstance(p, Cache) for p in chain.policies)


def test_purges_subscribe_when_the_broker_url_comes_from_a_secret_file(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """compose and Kubernetes give the broker URL as PORTICO_BROKER_URL_FILE (a password)."""
    from gateway.pipeline.policy import PolicyContext

    secret = tmp_path / "broker-url"
    secret.write_text("amqp://portico:pw@rabbitmq:5672//\n")
    monkeypatch.delenv("PORTICO_BROKER_URL", raising=False)
    monkeypatch.setenv("PORTICO_BROKER_URL_FILE", str(secret))
    runtime = CacheRuntime.of(PolicyContext(config=None, resources={}))
    assert runtime.broker is not None and runtime.broker.url == "amqp://portico:pw@rabbitmq:5672//"
    monkeypatch.delenv("PORTICO_BROKER_URL_FILE")
    assert CacheRuntime.of(PolicyContext(config=None, resources={})).broker is None
