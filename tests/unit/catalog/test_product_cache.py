"""Cache-aside for product reads (ADR 0021): the LRU, the decorator, and the app with a fake
store that can go down - no Redis here (tests/integration/test_catalog_cache.py has it)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from decimal import Decimal
from pathlib import Path

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client import CollectorRegistry

from chassis import sqlite_url
from chassis.resilience import OPEN, CircuitBreaker
from services.catalog.__main__ import init
from services.catalog.adapters.cache import (
    CacheStore,
    LruStore,
    ProductCache,
    RedisStore,
    StoreUnavailable,
)
from services.catalog.adapters.sql import snapshot
from services.catalog.app import create_app
from services.catalog.domain import Product
from services.catalog.entrypoints import deps
from services.catalog.settings import CatalogSettings
from tests.support.tokens import TestIssuer
from tests.unit.catalog.conftest import Api


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeStore(CacheStore):
    """A dict that can be taken down: every call then raises StoreUnavailable("error")."""

    kind = "fake"

    def __init__(self) -> None:
        self.data: dict[str, str] = {}
        self.down = False
        self.calls = 0

    def _check(self) -> None:
        self.calls += 1
        if self.down:
            raise StoreUnavailable("error")

    def get(self, key: str) -> str | None:
        self._check()
        return self.data.get(key)

    def set(self, key: str, value: str, ttl: float) -> None:
        self._check()
        self.data[key] = value

    def delete(self, keys: Iterable[str]) -> None:
        self._check()
        for key in keys:
            self.data.pop(key, None)


def sample(cache: ProductCache, name: str, **labels: str) -> float:
    return cache.registry.get_sample_value(name, labels) or 0.0


# --- the LRU -----------------------------------------------------------------------------------


def test_lru_is_bounded_and_evicts_the_least_recently_used() -> None:
    lru = LruStore(2)
    lru.set("a", "1", 60)
    lru.set("b", "2", 60)
    assert lru.get("a") == "1"  # a is now more recent than b
    lru.set("c", "3", 60)
    assert len(lru) == 2
    assert lru.get("b") is None
    assert (lru.get("a"), lru.get("c")) == ("1", "3")


def test_lru_entries_expire_after_their_ttl() -> None:
    clock = FakeClock()
    lru = LruStore(10, clock=clock)
    lru.set("a", "1", 5)
    clock.now += 4.9
    assert lru.get("a") == "1"
    clock.now += 0.2
    assert lru.get("a") is None
    assert len(lru) == 0


# --- the app, with its default LRU ----------------------------------------------------------


def test_a_second_read_is_a_hit_and_a_patch_is_seen_at_once(
    app: Flask, api: Api, client: FlaskClient
) -> None:
    cache: ProductCache = deps(app).cache
    assert cache.store.kind == "lru"
    pid = api.create().get_json()["id"]
    url = f"/api/v1/products/{pid}"
    assert client.get(url, headers=api.read).get_json()["version"] == 1
    assert client.get(url, headers=api.read).get_json()["version"] == 1
    assert sample(cache, "catalog_cache_lookups_total", store="lru", result="miss") == 1
    assert sample(cache, "catalog_cache_lookups_total", store="lru", result="hit") == 1

    patched = client.patch(url, json={"name": "Renamed"}, headers=api.write)
    assert patched.status_code == 200
    doc = client.get(url, headers=api.read).get_json()
    assert (doc["version"], doc["name"]) == (2, "Renamed")  # not the cached v1
    metrics = client.get("/metrics").get_data(as_text=True)
    assert 'catalog_cache_lookups_total{result="hit",store="lru"} 1.0' in metrics


def test_a_sku_lookup_is_cached_and_a_changed_sku_drops_the_old_one(
    app: Flask, api: Api, client: FlaskClient
) -> None:
    cache: ProductCache = deps(app).cache
    pid = api.create(sku="OLD-1").get_json()["id"]
    assert [p["id"] for p in api.list(sku="OLD-1").get_json()["items"]] == [pid]
    assert [p["id"] for p in api.list(sku="OLD-1").get_json()["items"]] == [pid]
    assert sample(cache, "catalog_cache_lookups_total", store="lru", result="hit") == 1

    url = f"/api/v1/products/{pid}"
    assert client.patch(url, json={"sku": "NEW-1"}, headers=api.write).status_code == 200
    assert api.list(sku="OLD-1").get_json() == {"items": [], "next_cursor": None}
    assert [p["sku"] for p in api.list(sku="NEW-1").get_json()["items"]] == ["NEW-1"]


def test_a_deleted_product_is_not_answered_from_the_cache(api: Api, client: FlaskClient) -> None:
    pid = api.create(sku="GONE-1").get_json()["id"]
    url = f"/api/v1/products/{pid}"
    assert client.get(url, headers=api.read).status_code == 200
    assert api.list(sku="GONE-1").get_json()["items"]
    assert client.delete(url, headers=api.write).status_code == 204
    assert client.get(url, headers=api.read).status_code == 404
    assert api.list(sku="GONE-1").get_json()["items"] == []


def test_etag_and_304_hold_for_a_cached_product(app: Flask, api: Api, client: FlaskClient) -> None:
    cache: ProductCache = deps(app).cache
    pid = api.create().get_json()["id"]
    url = f"/api/v1/products/{pid}"
    first = client.get(url, headers=api.read)
    etag, modified = first.headers["ETag"], first.headers["Last-Modified"]
    assert etag == '"v1"'
    again = client.get(url, headers={**api.read, "If-None-Match": etag})
    assert again.status_code == 304
    assert again.headers["ETag"] == etag
    since = client.get(url, headers={**api.read, "If-Modified-Since": modified})
    assert since.status_code == 304
    assert sample(cache, "catalog_cache_lookups_total", store="lru", result="hit") == 2

    assert client.patch(url, json={"price": "1.00"}, headers=api.write).status_code == 200
    changed = client.get(url, headers={**api.read, "If-None-Match": etag})
    assert changed.status_code == 200
    assert changed.headers["ETag"] == '"v2"'


def test_writes_read_the_database_not_the_cache(app: Flask, api: Api, client: FlaskClient) -> None:
    """If-Match and optimistic locking compare with the row: a stale entry (say, one a race
    refilled) must not turn a valid conditional write into 412 or 409."""
    cache: ProductCache = deps(app).cache
    pid = api.create().get_json()["id"]
    url = f"/api/v1/products/{pid}"
    assert client.patch(url, json={"name": "Two"}, headers=api.write).status_code == 200
    doc = client.get(url, headers=api.read).get_json()
    assert doc["version"] == 2
    stale = Product.create(
        id=pid, sku=doc["sku"], name="Old", category="tools", price=Decimal(doc["price"])
    )
    assert stale.version == 1
    cache.store.set(cache.id_key(pid), snapshot(stale), 60)
    resp = client.patch(url, json={"name": "Three"}, headers={**api.write, "If-Match": '"v2"'})
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["version"] == 3
    assert client.get(url, headers=api.read).get_json()["name"] == "Three"


def test_no_cache_with_zero_entries(tmp_path: Path, issuer: TestIssuer) -> None:
    settings = CatalogSettings(
        database_url=sqlite_url(tmp_path / "c.db"), relay=False, cache_entries=0
    )
    init(settings)
    app = create_app(settings, verifier=issuer.verifier())
    try:
        assert deps(app).cache is None
        api = Api(app.test_client(), issuer)
        pid = api.create().get_json()["id"]
        assert api.client.get(f"/api/v1/products/{pid}", headers=api.read).status_code == 200
    finally:
        deps(app).engine.dispose()


# --- a store that fails -------------------------------------------------------------------------


@pytest.fixture
def fake() -> FakeStore:
    return FakeStore()


@pytest.fixture
def faked(settings: CatalogSettings, issuer: TestIssuer, fake: FakeStore) -> Iterator[Api]:
    init(settings)
    app = create_app(settings, verifier=issuer.verifier(), cache_store=fake)
    yield Api(app.test_client(), issuer)
    deps(app).engine.dispose()


def _cache(api: Api) -> ProductCache:
    app: Flask = api.client.application
    cache: ProductCache = deps(app).cache
    return cache


def test_a_store_that_is_down_falls_back_to_the_database(faked: Api, fake: FakeStore) -> None:
    pid = faked.create().get_json()["id"]
    url = f"/api/v1/products/{pid}"
    fake.down = True
    for _ in range(3):
        resp = faked.client.get(url, headers=faked.read)
        assert resp.status_code == 200
        assert resp.get_json()["id"] == pid
    assert faked.list(sku="SKU-001").get_json()["items"][0]["id"] == pid
    cache = _cache(faked)
    fallbacks = "catalog_cache_fallbacks_total"
    assert sample(cache, fallbacks, store="fake", operation="get", reason="error") == 4
    assert sample(cache, fallbacks, store="fake", operation="set", reason="error") == 4
    fake.down = False
    faked.client.get(url, headers=faked.read)
    assert faked.client.get(url, headers=faked.read).status_code == 200
    assert sample(cache, "catalog_cache_lookups_total", store="fake", result="hit") == 1


def test_an_unreadable_entry_is_a_miss_not_an_error(faked: Api, fake: FakeStore) -> None:
    pid = faked.create().get_json()["id"]
    cache = _cache(faked)
    fake.data[cache.id_key(pid)] = '{"not": "a product"}'
    resp = faked.client.get(f"/api/v1/products/{pid}", headers=faked.read)
    assert resp.status_code == 200
    assert resp.get_json()["id"] == pid
    labels = {"store": "fake", "operation": "get", "reason": "unreadable"}
    assert sample(cache, "catalog_cache_fallbacks_total", **labels) == 1


def test_a_delete_missed_while_down_is_retried_and_the_entry_never_served(
    faked: Api, fake: FakeStore
) -> None:
    pid = faked.create().get_json()["id"]
    url = f"/api/v1/products/{pid}"
    faked.client.get(url, headers=faked.read)  # cached, v1
    cache = _cache(faked)
    assert cache.id_key(pid) in fake.data
    fake.down = True
    assert faked.client.patch(url, json={"name": "New"}, headers=faked.write).status_code == 200
    fake.down = False  # back, with the stale v1 still stored
    assert cache.id_key(pid) in fake.data
    doc = faked.client.get(url, headers=faked.read).get_json()
    assert (doc["version"], doc["name"]) == (2, "New")
    assert faked.client.get(url, headers=faked.read).get_json()["version"] == 2


# --- Redis behind the breaker (a fake client) ---------------------------------------------------


class DeadRedis:
    def __init__(self) -> None:
        self.calls = 0

    def get(self, key: str) -> bytes | None:
        self.calls += 1
        raise redis.ConnectionError("connection refused")


def test_a_dead_redis_is_left_alone_by_the_breaker_until_its_retry_time() -> None:
    clock = FakeClock()
    registry = CollectorRegistry()
    breaker = CircuitBreaker(
        "test-cache", failure_threshold=3, recovery_timeout=5, registry=registry, clock=clock
    )
    client = DeadRedis()
    store = RedisStore("redis://unused", breaker=breaker, client=client)
    cache = ProductCache(store, ttl=60, registry=registry)
    for _ in range(10):
        assert cache.get(cache.id_key("p1")) is None
    assert client.calls == 3
    assert breaker.state == OPEN
    fallbacks = "catalog_cache_fallbacks_total"
    assert sample(cache, fallbacks, store="redis", operation="get", reason="error") == 3
    assert sample(cache, fallbacks, store="redis", operation="get", reason="circuit_open") == 7
    clock.now += 5
    assert cache.get(cache.id_key("p1")) is None  # the half-open trial
    assert client.calls == 4


def test_settings_read_the_cache_variables() -> None:
    settings = CatalogSettings.from_env(
        {
            "CATALOG_REDIS_URL": "redis://127.0.0.1:6379/3",
            "CATALOG_CACHE_TTL": "30",
            "CATALOG_REDIS_TIMEOUT": "0.02",
        }
    )
    assert settings.redis_url == "redis://127.0.0.1:6379/3"
    assert (settings.cache_ttl, settings.redis_timeout) == (30.0, 0.02)
    assert CatalogSettings.from_env({}).redis_url is None
    with pytest.raises(ValueError, match="CATALOG_REDIS_URL"):
        CatalogSettings.from_env({"CATALOG_REDIS_URL": "http://nope"})
    with pytest.raises(ValueError, match="CATALOG_REDIS_TIMEOUT"):
        CatalogSettings.from_env({"CATALOG_REDIS_TIMEOUT": "0"})


def test_make_up_gives_catalog_its_redis_broker_under_the_broker_key_prefix(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from tools.stack import Stack

    monkeypatch.delenv("CATALOG_REDIS_URL", raising=False)
    monkeypatch.delenv("CATALOG_CACHE_KEY_PREFIX", raising=False)
    url = "redis://127.0.0.1:6399/0"
    env = Stack(tmp_path, extra_env={"PORTICO_BROKER_KEY_PREFIX": "t1:"}, broker_url=url).env()
    assert (env["CATALOG_REDIS_URL"], env["CATALOG_CACHE_KEY_PREFIX"]) == (url, "t1:catalog:")
    amqp = Stack(tmp_path, broker_url="amqp://guest:guest@127.0.0.1:5672//").env()
    assert "CATALOG_REDIS_URL" not in amqp  # no Redis: each process keeps its LRU
