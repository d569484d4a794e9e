"""The response cache against real Redis and RabbitMQ, with `python -m gateway` processes.

* Two gateway processes on one Redis share entries: a miss on one is a hit on the other, and
  a `product.updated` event on the events exchange purges the product's entry for both.
* Two gateway processes with in-memory stores: the event reaches each (its own exclusive
  queue) and each purges its own entries.
* A Redis of the test's own is killed under a running gateway: requests still answer 200,
  `X-Cache: BYPASS`, and caching resumes when Redis is back.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from aiohttp import ClientSession, web
from aiohttp.test_utils import TestServer
from kombu import Producer

from chassis.messaging import BrokerSettings, Event, connect, events_exchange
from gateway.app import create_app
from gateway.config import parse_config
from tests.integration.test_gateway_ratelimit import (
    DEADLINE,
    REQUEST_TIMEOUT,
    GatewayProcess,
    RedisServer,
    free_port,
    gateway_processes,
)
from tests.support.brokers import cleanup, isolated_settings
from tests.support.waiting import wait_until_async


class Catalog:
    """A stand-in catalog: products with versions, ETag and `public, max-age=60`."""

    def __init__(self) -> None:
        self.versions: dict[str, int] = {}
        self.calls = 0

    async def product(self, request: web.Request) -> web.Response:
        pid = request.match_info["id"]
        self.calls += 1
        version = self.versions.setdefault(pid, 1)
        return web.json_response(
            {"id": pid, "version": version},
            headers={"ETag": f'"v{version}"', "Cache-Control": "public, max-age=60"},
        )


@pytest.fixture
async def catalog() -> AsyncIterator[tuple[Catalog, str]]:
    fake = Catalog()

    async def ok(_request: web.Request) -> web.Response:
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/health/ready", ok)
    app.router.add_get("/api/v1/products/{id}", fake.product)
    server = TestServer(app, host="127.0.0.1", port=free_port())
    await server.start_server()
    try:
        yield fake, str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """`redis-server` of this test's own (test_gateway_ratelimit's), killed by PID."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.kill()


def cache_config(upstream: str, redis_url: str, prefix: str) -> dict[str, Any]:
    return {
        "auth": {"issuer": "https://issuer.test", "jwks_url": upstream + "/jwks"},
        "upstreams": {"catalog": {"instances": [upstream], "health": {"interval": 60}}},
        "rate_limits": {"redis_url": redis_url, "key_prefix": prefix + "rl:"},
        "routes": [
            {
                "name": "products.get",
                "methods": ["GET"],
                "path": "/api/v1/products/{id}",
                "upstream": "catalog",
                "auth": {"required": False},
                "cache": {"ttl": 60, "shared": True, "purge_on": ["product.updated"]},
            }
        ],
    }


def publish(broker: BrokerSettings, event: Event) -> None:
    with connect(broker) as conn:
        exchange = events_exchange(broker)
        Producer(conn.channel()).publish(
            event.to_json(),
            exchange=exchange,
            routing_key=event.type,
            content_type="application/json",
            content_encoding="utf-8",
            declare=[exchange],
        )


async def get(session: ClientSession, gateway: GatewayProcess, pid: str) -> tuple[str, Any]:
    async with session.get(f"{gateway.url}/api/v1/products/{pid}") as resp:
        assert resp.status == 200, await resp.text()
        return resp.headers["X-Cache"], await resp.json()


async def subscribed(
    session: ClientSession, gateway: GatewayProcess, broker: BrokerSettings
) -> None:
    """Wait until `gateway` purges on events: its entry for a probe product is cached, then
    an event for it is published until the next read misses."""

    async def answers() -> bool:
        assert gateway.proc.poll() is None, gateway.proc.stderr.read()  # type: ignore[union-attr]
        with contextlib.suppress(OSError):
            await get(session, gateway, "probe")
            return True
        return False

    await wait_until_async(answers, DEADLINE, "the gateway to answer")

    async def purged() -> bool:
        label, _ = await get(session, gateway, "probe")
        if label == "MISS":
            return True
        await asyncio.to_thread(publish, broker, Event("product.updated", {"id": "probe"}))
        await asyncio.sleep(0.1)  # the event's way through the broker, then read again
        label, _ = await get(session, gateway, "probe")
        return label == "MISS"

    await get(session, gateway, "probe")  # cached
    await wait_until_async(purged, DEADLINE, "the gateway's purge subscription")


@pytest.fixture
def broker(rabbitmq_url: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    settings = isolated_settings(rabbitmq_url)
    monkeypatch.setenv("PORTICO_BROKER_URL", settings.url)
    monkeypatch.setenv("PORTICO_EVENTS_EXCHANGE", settings.exchange)
    monkeypatch.setenv("PORTICO_QUEUE_PREFIX", settings.queue_prefix)
    yield settings
    cleanup(settings, [])


async def test_two_gateways_share_entries_in_redis_and_an_event_purges_them(
    catalog: tuple[Catalog, str],
    redis_url: str,
    redis_key_prefix: str,
    broker: BrokerSettings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, upstream = catalog
    monkeypatch.setenv("GATEWAY_CACHE_KEY_PREFIX", redis_key_prefix)
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(cache_config(upstream, redis_url, redis_key_prefix)))
    with gateway_processes(path, 2) as (a, b):
        async with ClientSession(timeout=REQUEST_TIMEOUT) as session:
            await subscribed(session, a, broker)
            await wait_until_async(lambda: _answers(session, b), DEADLINE, "the second gateway")
            calls = fake.calls
            entries = redis.Redis.from_url(redis_url)
            pattern = f"{redis_key_prefix}e:*"
            before = len(list(entries.scan_iter(match=pattern)))
            assert await get(session, a, "1") == ("MISS", {"id": "1", "version": 1})

            async def landed() -> bool:  # the entry is written after the answer, not before
                return len(list(entries.scan_iter(match=pattern))) > before

            await wait_until_async(landed, DEADLINE, "the entry in Redis")
            entries.close()
            assert await get(session, b, "1") == ("HIT", {"id": "1", "version": 1})
            assert fake.calls == calls + 1  # one upstream call for both processes

            fake.versions["1"] = 2  # the product changes, catalog publishes its event
            await asyncio.to_thread(publish, broker, Event("product.updated", {"id": "1"}))

            async def fresh(gateway: GatewayProcess) -> bool:
                _, doc = await get(session, gateway, "1")
                return bool(doc["version"] == 2)

            await wait_until_async(lambda: fresh(b), DEADLINE, "the purge on the second gateway")

            async def shared_again() -> bool:
                return await get(session, a, "1") == ("HIT", {"id": "1", "version": 2})

            await wait_until_async(
                shared_again, DEADLINE, "the fresh entry, stored by the second, on the first"
            )


async def test_in_memory_stores_are_purged_on_every_gateway_process(
    catalog: tuple[Catalog, str],
    broker: BrokerSettings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake, upstream = catalog
    monkeypatch.setenv("GATEWAY_CACHE_STORE", "memory")
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(cache_config(upstream, "", "unused:")))
    with gateway_processes(path, 2) as gateways:
        async with ClientSession(timeout=REQUEST_TIMEOUT) as session:
            for gateway in gateways:
                await subscribed(session, gateway, broker)
            for gateway in gateways:
                assert (await get(session, gateway, "7"))[0] == "MISS"  # one store each
                assert (await get(session, gateway, "7"))[0] == "HIT"
            fake.versions["7"] = 2
            await asyncio.to_thread(publish, broker, Event("product.updated", {"id": "7"}))
            for gateway in gateways:

                async def fresh(g: GatewayProcess = gateway) -> bool:
                    _, doc = await get(session, g, "7")
                    return bool(doc["version"] == 2)

                await wait_until_async(fresh, DEADLINE, "the purge on every gateway process")


async def _answers(session: ClientSession, gateway: GatewayProcess) -> bool:
    assert gateway.proc.poll() is None, gateway.proc.stderr.read()  # type: ignore[union-attr]
    with contextlib.suppress(OSError):
        async with session.get(f"{gateway.url}/healthz") as resp:
            return resp.status == 200
    return False


async def test_a_cache_whose_redis_is_down_never_fails_a_request(
    catalog: tuple[Catalog, str], own_redis: RedisServer, aiohttp_client: Any
) -> None:
    _, upstream = catalog
    raw = cache_config(upstream, own_redis.url, "portico-test:cache:")
    raw["rate_limits"]["redis_timeout"] = 0.2
    app = create_app(parse_config(raw, environ={}), transport_kind="aiohttp")
    client = await aiohttp_client(app)

    async def label() -> str:
        resp = await client.get("/api/v1/products/9")
        assert resp.status == 200
        return str(resp.headers["X-Cache"])

    async def stored() -> bool:
        return await label() == "HIT"

    await wait_until_async(stored, DEADLINE, "the cache on Redis")
    own_redis.kill()
    assert [await label() for _ in range(3)] == ["BYPASS"] * 3
    own_redis.start()

    async def back() -> bool:
        return await label() in ("MISS", "HIT")

    await wait_until_async(back, DEADLINE, "the cache back on Redis")
