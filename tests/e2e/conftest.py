"""End-to-end fixtures: the real stack (gunicorn and aiohttp services, the gateway) on free
ports in a throwaway work directory, started exactly as `make up` starts it.

Events go through the shared Redis on 127.0.0.1:6379 under an exchange, queue names and key
prefix of this run alone, deleted afterwards (with CI=true a missing Redis fails the run).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from tests.support.brokers import cleanup, isolated_settings, redis_reachable
from tools.stack import DEFAULT_PORTS, Stack, free_port, running


@contextlib.contextmanager
def isolated_stack(workdir: Path, extra_env: Mapping[str, str] | None = None) -> Iterator[Stack]:
    broker = isolated_settings(redis_reachable())
    env = {
        "PORTICO_BROKER_URL": broker.url,
        "PORTICO_EVENTS_EXCHANGE": broker.exchange,
        "PORTICO_QUEUE_PREFIX": broker.queue_prefix,
        "PORTICO_BROKER_KEY_PREFIX": broker.key_prefix,
        **(extra_env or {}),
    }
    ports = {name: free_port() for name in DEFAULT_PORTS}
    try:
        with running(workdir, ports=ports, extra_env=env) as started:
            yield started
    finally:
        cleanup(broker, [])


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with isolated_stack(tmp_path_factory.mktemp("stack")) as started:
        yield started


@pytest.fixture(scope="session")
def gateway(stack: Stack) -> str:
    return stack.gateway_url


@pytest.fixture(scope="session")
def creds(stack: Stack) -> dict[str, str]:
    return stack.credentials()
