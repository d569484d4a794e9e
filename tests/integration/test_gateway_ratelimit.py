"""Rate limits against real Redis: shared by gateway processes, and what happens when it goes.

* Two `python -m gateway` processes on one Redis, clients sending 3x the limit at both: they
  admit together no more than the limit (and not much less).
* A Redis server of the test's own (`redis-server` on a free port, by PID) is killed, paused
  and restarted under a running gateway: fail-open keeps admitting through the in-process
  limiter, fail-closed answers 503, no request waits for Redis, and once Redis is back (empty,
  without its script) the limits are decided there again.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from aiohttp import ClientSession, ClientTimeout, web
from aiohttp.test_utils import TestClient, TestServer

from gateway.app import create_app
from gateway.config import parse_config
from gateway.transport import MockResponse, MockTransport
from tests.support.external import unavailable
from tests.support.front import FrontTestServer
from tests.support.waiting import wait_until, wait_until_async
from tools.stack import free_port

ROOT = Path(__file__).resolve().parents[2]
REQUEST_TIMEOUT = ClientTimeout(total=5)
DEADLINE = 20.0


# --- two gateway processes, one Redis -------------------------------------------------------


class GatewayProcess:
    def __init__(self, config_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {
            **os.environ,
            "GATEWAY_CONFIG": str(config_path),
            "GATEWAY_PORT": str(self.port),
            "GATEWAY_HOST": "127.0.0.1",
            # The upstream client is not what this test is about: use the reference one.
            "GATEWAY_TRANSPORT": "aiohttp",
        }
        env.pop("GATEWAY_REDIS_URL", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "gateway"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        if self.proc.stderr is not None:
            self.proc.stderr.close()


@contextlib.contextmanager
def gateway_processes(config_path: Path, n: int) -> Iterator[list[GatewayProcess]]:
    started: list[GatewayProcess] = []
    try:
        for _ in range(n):
            started.append(GatewayProcess(config_path))
        yield started
    finally:
        for gateway in started:
            gateway.stop()


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    """A tiny real upstream on a free loopback port."""

    async def ok(_request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_get("/health/ready", ok)
    app.router.add_get("/api/{tail:.*}", ok)
    server = TestServer(app, host="127.0.0.1", port=free_port())
    await server.start_server()
    try:
        yield str(server.make_url("")).rstrip("/")
    finally:
        await server.close()


LIMIT = 40


def shared_config(upstream: str, redis_url: str, key_prefix: str) -> dict[str, Any]:
    # burst = limit, and the interval (period / limit = 90 s) is longer than the test: in the
    # test's span GCRA admits exactly `LIMIT`. fail_closed + a generous timeout: a Redis
    # hiccup shows as a 503 the test sees, never as a silent local admission.
    return {
        "auth": {"issuer": "https://issuer.test", "jwks_url": upstream + "/jwks"},
        "upstreams": {"svc": {"instances": [upstream], "health": {"interval": 60}}},
        "rate_limits": {
            "redis_url": redis_url,
            "key_prefix": key_prefix,
            "redis_timeout": 1.0,
            "on_redis_error": "fail_closed",
            "policies": {
                "shared": {"limit": LIMIT, "period": LIMIT * 90, "burst": LIMIT},
                "warmup": {"limit": 1000, "period": 1},
            },
        },
        "routes": [
            {
                "name": "limited",
                "methods": ["GET"],
                "path": "/api/limited",
                "upstream": "svc",
                "auth": {"required": False},
                "rate_limit": "shared",
            },
            {
                "name": "warmup",
                "methods": ["GET"],
                "path": "/api/warmup",
                "upstream": "svc",
                "auth": {"required": False},
                "rate_limit": "warmup",
            },
        ],
    }


async def test_two_gateway_processes_together_admit_no_more_than_the_limit(
    upstream: str, redis_url: str, redis_key_prefix: str, tmp_path: Path
) -> None:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(shared_config(upstream, redis_url, redis_key_prefix)))
    with gateway_processes(path, 2) as gateways:
        async with ClientSession(timeout=REQUEST_TIMEOUT) as session:

            async def decided_by_redis(gateway: GatewayProcess) -> bool:
                assert gateway.proc.poll() is None, gateway.proc.stderr.read()  # type: ignore[union-attr]
                with contextlib.suppress(OSError):
                    async with session.get(gateway.url + "/api/warmup") as resp:
                        return resp.status == 200  # 503 until connected to Redis
                return False

            for gateway in gateways:
                await wait_until_async(
                    lambda g=gateway: decided_by_redis(g), DEADLINE, "the gateway and its Redis"
                )

            async def one(i: int) -> tuple[int, int, str | None]:
                gateway = i % 2
                async with session.get(gateways[gateway].url + "/api/limited") as resp:
                    await resp.read()
                    return gateway, resp.status, resp.headers.get("RateLimit-Policy")

            results = await asyncio.gather(*(one(i) for i in range(3 * LIMIT)))

    statuses = Counter(status for _, status, _ in results)
    assert set(statuses) <= {200, 429}, statuses
    admitted = statuses[200]
    print(f"\nadmitted {admitted} of {3 * LIMIT} (limit {LIMIT}) across 2 gateway processes")
    assert 0.95 * LIMIT <= admitted <= LIMIT
    per_gateway = Counter(g for g, status, _ in results if status == 200)
    assert per_gateway[0] > 0 and per_gateway[1] > 0, per_gateway
    assert {policy for _, _, policy in results} == {f'"shared";q={LIMIT};w={LIMIT * 90}'}


# --- a Redis of our own, killed, paused and restarted ----------------------------------------


class RedisServer:
    """`redis-server` on a free port, without persistence, managed by PID."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            unavailable("redis-server", FileNotFoundError("redis-server is not installed"))
        self.binary = str(binary)
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url, socket_timeout=1, socket_connect_timeout=1)

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                if self.proc is not None and self.proc.poll() is not None:
                    raise  # it exited: no point waiting
                return False

        try:
            wait_until(answers, DEADLINE, "redis-server to answer")
        finally:
            client.close()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_timeout=2, socket_connect_timeout=2)


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.resume()
        server.kill()


BURST = 3
TIMEOUT = 0.05  # per Redis call; generous for a loaded CI box, still far below a hang


@pytest.fixture(params=["aiohttp", "front"])
def server(request: pytest.FixtureRequest) -> str:
    """The gateway's aiohttp server (a mock upstream), or its front server in front of a real
    upstream: there a limited request waits for Redis in a callback, not in a task."""
    return str(request.param)


async def gateway_on(
    aiohttp_client: Any, redis_url: str, server: str = "aiohttp", aiohttp_server: Any = None
) -> TestClient:
    instance = "http://svc.test"
    if server == "front":

        async def ok(_request: web.Request) -> web.Response:
            return web.json_response({"ok": True})

        upstream_app = web.Application()
        upstream_app.router.add_get("/{tail:.*}", ok)
        upstream = await aiohttp_server(upstream_app, host="127.0.0.1")
        instance = str(upstream.make_url("")).rstrip("/")
    raw = {
        "server": {"trusted_proxies": ["127.0.0.1/32"]},
        "auth": {"issuer": "https://issuer.test", "jwks_url": "http://svc.test/jwks"},
        "upstreams": {"svc": {"instances": [instance], "health": {"interval": 60}}},
        "rate_limits": {
            "redis_url": redis_url,
            "key_prefix": "rltest:",
            "redis_timeout": TIMEOUT,
            "policies": {
                "open": {"limit": 60, "period": 3600, "burst": BURST,
                         "on_redis_error": "fail_open"},
                "closed": {"limit": 60, "period": 3600, "burst": 1000,
                           "on_redis_error": "fail_closed"},
            },
        },
        "routes": [
            {
                "name": name,
                "methods": ["GET"],
                "path": f"/{name}",
                "upstream": "svc",
                "auth": {"required": False},
                "rate_limit": name,
            }
            for name in ("open", "closed")
        ],
    }  # fmt: skip
    if server == "front":
        app = create_app(parse_config(raw, environ={}), transport_kind="http1")
        client: TestClient = await aiohttp_client(FrontTestServer(app))
        return client
    transport = MockTransport(lambda _request: MockResponse(json={"ok": True}))
    app = create_app(parse_config(raw, environ={}), transport=transport)
    client = await aiohttp_client(app)
    return client


class Timed:
    """Requests through the gateway, each bounded by a client timeout and its time kept."""

    def __init__(self, client: TestClient) -> None:
        self.client = client
        self.slowest = 0.0

    async def status(self, path: str, consumer: str) -> int:
        started = time.monotonic()
        async with self.client.get(
            path, headers={"X-Forwarded-For": consumer}, timeout=REQUEST_TIMEOUT
        ) as resp:
            await resp.read()
            if resp.status == 503:
                assert resp.content_type == "application/problem+json"
                assert resp.headers["Retry-After"] == "1"
        self.slowest = max(self.slowest, time.monotonic() - started)
        return resp.status

    async def statuses(self, path: str, consumer: str, n: int) -> list[int]:
        return [await self.status(path, consumer) for _ in range(n)]

    async def redis_decides(self) -> bool:
        return await self.status("/closed", "10.9.9.9") != 503


async def test_redis_killed_and_restarted(
    aiohttp_client: Any, aiohttp_server: Any, own_redis: RedisServer, server: str
) -> None:
    gw = Timed(await gateway_on(aiohttp_client, own_redis.url, server, aiohttp_server))
    await wait_until_async(gw.redis_decides, DEADLINE, "the gateway to reach Redis")
    limited = [200] * BURST + [429] * 2

    # Redis up: Redis decides (the bucket is there).
    assert await gw.statuses("/open", "10.9.0.1", BURST + 2) == limited
    with own_redis.client() as r:
        assert r.exists("rltest:open:ip:10.9.0.1")

    # Killed: fail-open still limits, in process; fail-closed refuses; nothing hangs.
    own_redis.kill()
    gw.slowest = 0.0
    assert await gw.statuses("/open", "10.9.0.2", BURST + 2) == limited
    assert await gw.statuses("/closed", "10.9.0.2", 3) == [503] * 3
    assert gw.slowest < 1.0, f"a request took {gw.slowest:.3f}s with Redis gone"
    metrics = await (await gw.client.get("/metrics")).text()
    assert 'gateway_ratelimit_redis_errors_total{error="unavailable",policy="open"}' in metrics
    assert 'backend="fallback",outcome="allowed",policy="open"} 3.0' in metrics
    assert 'backend="fallback",outcome="limited",policy="open"} 2.0' in metrics

    # Back (empty, without the script): the gateway reconnects and Redis decides again.
    own_redis.start()
    await wait_until_async(gw.redis_decides, DEADLINE, "the gateway to reconnect")
    assert await gw.statuses("/open", "10.9.0.3", BURST + 2) == limited
    with own_redis.client() as r:
        assert r.exists("rltest:open:ip:10.9.0.3")
        r.script_flush()  # the script cache is gone: EVALSHA gets NOSCRIPT and reloads
    assert await gw.statuses("/closed", "10.9.0.4", 2) == [200, 200]
    assert await gw.statuses("/open", "10.9.0.4", BURST + 2) == limited
    with own_redis.client() as r:
        assert r.exists("rltest:open:ip:10.9.0.4")


async def test_redis_paused_times_out_per_call(
    aiohttp_client: Any, aiohttp_server: Any, own_redis: RedisServer, server: str
) -> None:
    gw = Timed(await gateway_on(aiohttp_client, own_redis.url, server, aiohttp_server))
    await wait_until_async(gw.redis_decides, DEADLINE, "the gateway to reach Redis")

    own_redis.pause()  # connections stay open, nothing answers: a slow Redis
    try:
        gw.slowest = 0.0
        assert await gw.statuses("/open", "10.9.1.1", BURST + 1) == [200] * BURST + [429]
        assert await gw.statuses("/closed", "10.9.1.1", 2) == [503, 503]
        assert gw.slowest < 1.0, f"a request took {gw.slowest:.3f}s with Redis paused"
        metrics = await (await gw.client.get("/metrics")).text()
        assert 'gateway_ratelimit_redis_errors_total{error="timeout",policy="open"}' in metrics
    finally:
        own_redis.resume()

    await wait_until_async(gw.redis_decides, DEADLINE, "Redis to answer again")
    assert await gw.statuses("/open", "10.9.1.2", BURST + 1) == [200] * BURST + [429]
    with own_redis.client() as r:
        assert r.exists("rltest:open:ip:10.9.1.2")
