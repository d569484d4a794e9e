"""Reloading gateway.yaml in a running gateway: requests in flight finish on the old routes,
new ones use the new; an invalid file is refused and the old config stays in force."""

from __future__ import annotations

import asyncio
import copy
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient

from gateway.app import RELOADER, STATE, create_app
from gateway.config import load_config
from gateway.transport import MockResponse, MockTransport, OutboundRequest
from tests.support.waiting import wait_until_async

from .conftest import BASE, SVC, FakeUpstreams

OTHER = "http://other.test"


def _raw(**upstream_of_public: str) -> dict[str, Any]:
    raw = copy.deepcopy(BASE)
    raw["upstreams"]["other"] = {"instances": [OTHER], "health": {"interval": 60}}
    raw["routes"][0]["upstream"] = upstream_of_public.get("public", "svc")
    return raw


def _write(path: Path, raw: object) -> None:
    """Write so that the poller sees a change even within one mtime tick (size differs)."""
    text = yaml.safe_dump(raw) + f"# written {time.monotonic_ns()}\n"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


class Recorder(MockTransport):
    """A MockTransport that records which pools were replaced (reload's pool hand-over)."""

    def __init__(self, upstreams: FakeUpstreams) -> None:
        super().__init__(upstreams.dispatch)
        self.replaced: list[str] = []
        self.closed_pools: list[str] = []

    def replace_pool(self, pool: str, size: int) -> Callable[[], Awaitable[None]]:
        self.replaced.append(pool)

        async def close() -> None:
            self.closed_pools.append(pool)

        return close


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    path = tmp_path / "gateway.yaml"
    _write(path, _raw())
    return path


Start = Callable[..., Awaitable[TestClient]]


@pytest.fixture
def start(aiohttp_client: Any, upstreams: FakeUpstreams, config_file: Path) -> Start:
    async def make(interval: float = 3600.0, transport: MockTransport | None = None) -> TestClient:
        config = load_config(config_file, environ={})
        app = create_app(
            config,
            transport=transport or upstreams.transport,
            config_path=config_file,
            reload_interval=interval,
        )
        client: TestClient = await aiohttp_client(app)
        return client

    return make


async def _origin_of(client: TestClient, path: str = "/public/x") -> str:
    resp = await client.get(path)
    assert resp.status == 200, await resp.text()
    return str((await resp.json())["origin"])


def _echo_origin(upstreams: FakeUpstreams) -> None:
    for origin in (SVC, OTHER):
        upstreams.on(origin, "/public/x", lambda r: MockResponse(json={"origin": r.origin}))


async def test_in_flight_requests_finish_on_the_old_routes(
    start: Start, upstreams: FakeUpstreams, config_file: Path
) -> None:
    release = asyncio.Event()
    arrived = asyncio.Event()

    async def slow(request: OutboundRequest) -> MockResponse:
        arrived.set()
        await release.wait()
        return MockResponse(json={"origin": request.origin})

    upstreams.on(SVC, "/public/x", slow)
    upstreams.on(OTHER, "/public/x", lambda r: MockResponse(json={"origin": r.origin}))
    client = await start()
    in_flight = asyncio.create_task(client.get("/public/x"))
    await asyncio.wait_for(arrived.wait(), 5)

    _write(config_file, _raw(public="other"))
    assert await client.app[RELOADER].reload()
    assert await _origin_of(client) == OTHER  # a new request: the new routes

    release.set()
    resp = await in_flight
    assert resp.status == 200
    assert (await resp.json())["origin"] == SVC  # started before the swap: the old routes


async def test_the_file_is_reloaded_when_it_changes(
    start: Start, upstreams: FakeUpstreams, config_file: Path
) -> None:
    _echo_origin(upstreams)
    client = await start(interval=0.05)
    assert await _origin_of(client) == SVC
    _write(config_file, _raw(public="other"))

    async def switched() -> bool:
        return await _origin_of(client) == OTHER

    await wait_until_async(switched, 5, "the new configuration in force")
    assert client.app[STATE].state.generation == 1


async def test_sighup_reloads(start: Start, upstreams: FakeUpstreams, config_file: Path) -> None:
    _echo_origin(upstreams)
    client = await start()  # the poller would take an hour: only the signal can do it
    reloader = client.app[RELOADER]
    if not reloader._signal_installed:  # pragma: no cover - not the main thread
        pytest.skip("no SIGHUP handler outside the main thread")
    _write(config_file, _raw(public="other"))
    os.kill(os.getpid(), signal.SIGHUP)

    async def switched() -> bool:
        return await _origin_of(client) == OTHER

    await wait_until_async(switched, 5, "the new configuration in force")


async def test_an_invalid_file_is_refused_and_the_old_config_stays(
    start: Start, upstreams: FakeUpstreams, config_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _echo_origin(upstreams)
    client = await start(interval=0.05)
    bad = _raw()
    bad["routes"][0]["upstream"] = "nowhere"
    bad["routes"][2]["timeout"] = -1
    with caplog.at_level(logging.ERROR, logger="portico.gateway.reload"):
        _write(config_file, bad)

        async def refused() -> bool:
            return client.app[RELOADER].rejected > 0

        await wait_until_async(refused, 5, "the reload refused")
    message = "\n".join(r.getMessage() for r in caplog.records)
    assert "rejected" in message
    assert "routes[2].timeout" in message
    assert client.app[STATE].state.generation == 0
    assert await _origin_of(client) == SVC

    _write(config_file, "routes: [")  # not YAML at all
    assert not await client.app[RELOADER].reload()
    assert await _origin_of(client) == SVC

    _write(config_file, _raw(public="other"))  # and a good file after the bad ones is taken
    assert await client.app[RELOADER].reload()
    assert await _origin_of(client) == OTHER


async def test_unchanged_upstreams_are_reused_and_dropped_pools_closed_after_drain(
    start: Start, upstreams: FakeUpstreams, config_file: Path
) -> None:
    transport = Recorder(upstreams)
    client = await start(transport=transport)
    before = client.app[STATE].state
    raw = _raw()
    del raw["upstreams"]["other"]
    raw["upstreams"]["svc"]["pool_size"] = 7  # changed: a new pool of the new size
    _write(config_file, raw)
    assert await client.app[RELOADER].reload()
    after = client.app[STATE].state
    assert after.upstreams["identity"] is before.upstreams["identity"]  # health state kept
    assert after.upstreams["svc"] is not before.upstreams["svc"]
    assert after.verifier is before.verifier  # same auth: the JWKS cache is kept
    assert sorted(transport.replaced) == ["other", "svc"]

    async def closed() -> bool:
        return sorted(transport.closed_pools) == ["other", "svc"]

    # nothing was in flight on the old state: closed at once
    await wait_until_async(closed, 5, "the old pools closed")


async def test_pools_close_only_after_the_old_requests_finish(
    start: Start, upstreams: FakeUpstreams, config_file: Path
) -> None:
    release = asyncio.Event()
    arrived = asyncio.Event()

    async def slow(request: OutboundRequest) -> MockResponse:
        arrived.set()
        await release.wait()
        return MockResponse(json={"origin": request.origin})

    upstreams.on(OTHER, "/public/x", slow)
    transport = Recorder(upstreams)
    _write(config_file, _raw(public="other"))
    client = await start(transport=transport)
    in_flight = asyncio.create_task(client.get("/public/x"))
    await asyncio.wait_for(arrived.wait(), 5)

    raw = _raw()
    del raw["upstreams"]["other"]
    _write(config_file, raw)
    assert await client.app[RELOADER].reload()
    await asyncio.sleep(0)  # let the drain task run: it must wait for the request
    assert transport.closed_pools == []
    release.set()
    assert (await in_flight).status == 200

    async def closed() -> bool:
        return transport.closed_pools == ["other"]

    await wait_until_async(closed, 5, "the old pools closed")
