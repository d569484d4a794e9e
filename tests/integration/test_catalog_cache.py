"""Catalog's product cache on real Redis (ADR 0021).

* On the shared Redis, under a throwaway key prefix: a miss fills the entry, the next read is a
  hit; a PATCH through the API deletes the entries (id, old and new sku), so the next read - in
  this app or in a second one on the same Redis, as another catalog process - is fresh.
* On a redis-server of the test's own (by PID): paused, reads still answer 200 within the
  socket timeout, and the breaker stops waiting for it; killed, reads answer 200 from the
  database at once; restarted, caching resumes.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask

from chassis import sqlite_url
from services.catalog.__main__ import init
from services.catalog.adapters.cache import ProductCache
from services.catalog.app import create_app
from services.catalog.entrypoints import deps
from services.catalog.settings import CatalogSettings
from tests.integration.test_gateway_ratelimit import RedisServer
from tests.support.tokens import TestIssuer
from tests.support.waiting import wait_until
from tests.unit.catalog.conftest import Api

DEADLINE = 20.0


@pytest.fixture
def issuer() -> TestIssuer:
    return TestIssuer()


@pytest.fixture
def make_api(tmp_path: Path, issuer: TestIssuer) -> Iterator[Callable[..., Api]]:
    """Catalog apps on one SQLite file (like gunicorn workers on one database)."""
    apps: list[Flask] = []
    database_url = sqlite_url(tmp_path / "catalog.db")

    def make(**cache: Any) -> Api:
        settings = CatalogSettings(database_url=database_url, relay=False, **cache)
        if not apps:
            init(settings)
        app = create_app(settings, verifier=issuer.verifier())
        apps.append(app)
        return Api(app.test_client(), issuer)

    yield make
    for app in apps:
        cache: ProductCache = deps(app).cache
        cache.store.close()
        deps(app).engine.dispose()


def cache_of(api: Api) -> ProductCache:
    cache: ProductCache = deps(api.client.application).cache
    return cache


def hits(api: Api) -> float:
    cache = cache_of(api)
    labels = {"store": "redis", "result": "hit"}
    return cache.registry.get_sample_value("catalog_cache_lookups_total", labels) or 0.0


def test_a_miss_fills_redis_and_an_update_through_the_api_deletes_the_entries(
    make_api: Callable[..., Api], redis_url: str, redis_key_prefix: str
) -> None:
    first = make_api(redis_url=redis_url, cache_key_prefix=redis_key_prefix)
    second = make_api(redis_url=redis_url, cache_key_prefix=redis_key_prefix)
    keys = redis.Redis.from_url(redis_url)
    try:
        pid = first.create(sku="CA-1").get_json()["id"]
        url = f"/api/v1/products/{pid}"
        cache = cache_of(first)
        assert not keys.exists(cache.id_key(pid))
        assert first.client.get(url, headers=first.read).status_code == 200  # miss
        assert keys.exists(cache.id_key(pid), cache.sku_key("CA-1")) == 2
        assert 0 < keys.pttl(cache.id_key(pid)) <= 60_000
        assert second.client.get(url, headers=second.read).get_json()["version"] == 1
        assert hits(second) == 1  # filled by the first process, hit by the second
        assert [p["id"] for p in second.list(sku="CA-1").get_json()["items"]] == [pid]
        assert hits(second) == 2

        patched = first.client.patch(url, json={"sku": "CA-2"}, headers=first.write)
        assert patched.status_code == 200
        assert not keys.exists(cache.id_key(pid), cache.sku_key("CA-1"))
        doc = second.client.get(url, headers=second.read).get_json()
        assert (doc["version"], doc["sku"]) == (2, "CA-2")
        assert second.list(sku="CA-1").get_json()["items"] == []
        assert keys.exists(cache.id_key(pid), cache.sku_key("CA-2")) == 2

        assert first.client.delete(url, headers=first.write).status_code == 204
        assert not keys.exists(cache.id_key(pid), cache.sku_key("CA-2"))
        assert second.client.get(url, headers=second.read).status_code == 404
    finally:
        keys.close()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.kill()


def test_reads_answer_from_the_database_while_redis_is_paused_or_dead(
    make_api: Callable[..., Api], own_redis: RedisServer
) -> None:
    api = make_api(redis_url=own_redis.url, redis_timeout=0.05, redis_retry_after=0.5)
    pid = api.create().get_json()["id"]
    url = f"/api/v1/products/{pid}"

    def read() -> float:
        started = time.monotonic()
        resp = api.client.get(url, headers=api.read)
        assert resp.status_code == 200
        assert resp.get_json()["id"] == pid
        return time.monotonic() - started

    read()
    read()
    assert hits(api) == 1

    own_redis.pause()  # slow: connected, never answers
    try:
        slow = [read() for _ in range(6)]
    finally:
        own_redis.resume()
    # the first reads wait out the 50 ms socket timeout, then the breaker stops asking
    assert max(slow) < 1.0, slow
    assert sum(slow) < 2.0, slow
    opened = {"store": "redis", "operation": "get", "reason": "circuit_open"}
    assert cache_of(api).registry.get_sample_value("catalog_cache_fallbacks_total", opened)

    wait_until(lambda: (read(), hits(api))[1] > 1, DEADLINE, "the cache back after the pause")

    own_redis.kill()
    dead = [read() for _ in range(10)]
    assert max(dead) < 1.0, dead
    assert sum(dead) < 2.0, dead

    own_redis.start()  # empty, same port
    before = hits(api)
    wait_until(
        lambda: (read(), hits(api))[1] > before, DEADLINE, "caching to resume on the new Redis"
    )
