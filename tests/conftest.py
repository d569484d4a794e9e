"""Fixtures shared by every layer of tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from tests.support.brokers import rabbitmq_reachable, redis_reachable
from tests.support.external import redis_up, throwaway_postgres, throwaway_redis_prefix
from tests.support.raw_upstream import RawFactory, raw_upstreams


@pytest.fixture
async def raw() -> AsyncIterator[RawFactory]:
    """`await raw(script)`: an upstream on a free loopback port answering byte for byte
    (`tests.support.raw_upstream`); stopped after the test."""
    async with raw_upstreams() as start:
        yield start


@pytest.fixture
def postgres_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh PostgreSQL database for one test, dropped afterwards."""
    prefix = request.node.module.__name__.rsplit(".", 1)[-1][:20].lower()
    with throwaway_postgres(prefix) as url:
        yield url


@pytest.fixture
def rabbitmq_url() -> str:
    """The RabbitMQ URL (PORTICO_TEST_AMQP_URL); skips locally when down, fails with CI=true.

    Tests isolate themselves with `tests.support.brokers.isolated_settings` and `cleanup`.
    """
    return rabbitmq_reachable()


@pytest.fixture
def redis_broker_url() -> str:
    """The Redis URL (PORTICO_TEST_REDIS_URL) for kombu's redis transport; same skip rules."""
    return redis_reachable()


@pytest.fixture
def redis_url() -> str:
    """The shared Redis (PORTICO_TEST_REDIS_URL, default 127.0.0.1:6379/0) when it answers a
    PING; skips locally when down, fails with CI=true. Never flushed: use `redis_key_prefix`."""
    return redis_up()


@pytest.fixture
def redis_key_prefix(redis_url: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """A key prefix unique to this test; its keys (and only those) are deleted afterwards."""
    prefix = request.node.module.__name__.rsplit(".", 1)[-1][:20].lower()
    with throwaway_redis_prefix(redis_url, prefix) as key_prefix:
        yield key_prefix
