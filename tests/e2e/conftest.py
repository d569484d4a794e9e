"""End-to-end fixtures: the real stack (gunicorn identity and catalog, the gateway) on free
ports in a throwaway work directory, started exactly as `make up` starts it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tools.stack import DEFAULT_PORTS, Stack, free_port, running


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp("stack")
    ports = {name: free_port() for name in DEFAULT_PORTS}
    # short token TTL is not needed; the expired-token case forges its own token
    with running(workdir, ports=ports) as started:
        yield started


@pytest.fixture(scope="session")
def gateway(stack: Stack) -> str:
    return stack.gateway_url


@pytest.fixture(scope="session")
def creds(stack: Stack) -> dict[str, str]:
    return stack.credentials()
