"""Failover with real processes: two catalog instances (gunicorn, one SQLite file) behind a
`python -m gateway` process, under a steady load of GETs from four clients.

One instance is killed (SIGKILL to its process group, by PID). The gateway's retries move the
requests caught on it to the other instance, passive ejection and the active health check
take it out of rotation, and after at most the detection interval no GET fails; none hangs
(every client request has a bounded timeout and must finish well within it). The instance is
started again on the same port and, once its health checks pass, takes traffic again - counted
from the gateway's access log, whose `instance` field names the instance that answered.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiohttp import ClientError, ClientSession, ClientTimeout, web
from aiohttp.test_utils import TestServer

from chassis.db import sqlite_url
from tests.support.tokens import TestIssuer
from tests.support.waiting import wait_until_async
from tools.stack import _gunicorn, free_port

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 30.0  # for a process to start, or a condition to come true
CLIENTS = 4
CLIENT_TIMEOUT = 5.0  # no request may take this long: "none hangs"
ROUTE_TIMEOUT = 2.0
HEALTH_INTERVAL = 0.25
# Generous: a probe slower than this (a busy 2-core runner while gunicorn boots) would take a
# live instance out too; a killed one refuses connections at once anyway.
PROBE_TIMEOUT = 1.0
# The gateway knows an instance is gone after one failed probe, at the latest (passive
# ejection and the breaker usually see it sooner, from the requests themselves).
DETECTION = HEALTH_INTERVAL + PROBE_TIMEOUT
ISSUER = "https://issuer.failover.test"


class Proc:
    """A child process in its own session, so that a kill reaches all of it (gunicorn's
    master and workers): signalled by its process group id, which is its PID."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log = log
        self.popen: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.popen = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def kill(self) -> None:
        assert self.popen is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


@contextlib.contextmanager
def running(*procs: Proc) -> Iterator[None]:
    try:
        yield
    finally:
        for proc in procs:
            proc.stop()


@pytest.fixture
async def jwks(aiohttp_server: Any) -> AsyncIterator[tuple[TestIssuer, str]]:
    """A tiny JWKS endpoint the catalog instances and the gateway fetch keys from."""
    issuer = TestIssuer(issuer=ISSUER, lifetime=600)

    async def keys(_request: web.Request) -> web.Response:
        return web.json_response(issuer.jwks())

    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", keys)
    server: TestServer = await aiohttp_server(app, host="127.0.0.1", port=free_port())
    yield issuer, str(server.make_url("/.well-known/jwks.json"))


def _gateway_config(instances: list[str], jwks_url: str) -> dict[str, Any]:
    return {
        "server": {"host": "127.0.0.1", "port": 0},
        "auth": {"issuer": ISSUER, "audience": "portico-api", "jwks_url": jwks_url},
        "upstreams": {
            "catalog": {
                "instances": instances,
                "timeout": ROUTE_TIMEOUT,
                "balancing": "round_robin",
                "health": {
                    "path": "/health/ready",
                    "interval": HEALTH_INTERVAL,
                    "timeout": PROBE_TIMEOUT,
                    "unhealthy_threshold": 1,
                    "healthy_threshold": 2,
                },
                "passive": {"consecutive_failures": 2, "ejection_time": 1.0},
                "breaker": {"failure_threshold": 3, "recovery_timeout": 1.0},
            }
        },
        "routes": [
            {
                "name": "products.list",
                "methods": ["GET"],
                "path": "/api/v1/products",
                "upstream": "catalog",
                "auth": {"scopes": ["catalog:read"]},
                "retry": {"attempts": 2, "on": [502, 503, 504, "connect_error"]},
            }
        ],
    }


def _served_by(log: Path, start: int = 0) -> Counter[str]:
    """Requests per instance in the gateway's access log, from byte offset `start`."""
    counts: Counter[str] = Counter()
    with log.open("rb") as f:
        f.seek(start)
        for line in f:
            if b'"instance"' not in line:
                continue
            with contextlib.suppress(orjson.JSONDecodeError):
                doc = orjson.loads(line)
                if doc.get("msg") == "request" and doc.get("route") == "products.list":
                    counts[doc["instance"]] += 1
    return counts


async def test_killed_instance_fails_over_and_comes_back(
    jwks: tuple[TestIssuer, str], tmp_path: Path
) -> None:
    issuer, jwks_url = jwks
    env = {
        **os.environ,
        "PORTICO_ISSUER": ISSUER,
        "PORTICO_AUDIENCE": "portico-api",
        "PORTICO_JWKS_URL": jwks_url,
        "CATALOG_DATABASE_URL": sqlite_url(tmp_path / "catalog.db"),
        "CATALOG_LOG_LEVEL": "WARNING",
        "CATALOG_RELAY": "false",  # reads only: no events, no broker
        "PYTHONUNBUFFERED": "1",
    }
    init = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.catalog", "init", "--seed-demo",
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(DEADLINE):
        output, _ = await init.communicate()
    assert init.returncode == 0, output.decode(errors="replace")
    ports = [free_port(), free_port()]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    catalogs = [
        Proc(f"catalog{i}", _one_worker(_gunicorn("catalog", port)), env, tmp_path / f"c{i}.log")
        for i, port in enumerate(ports)
    ]
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(_gateway_config(urls, jwks_url)))
    gateway_port = free_port()
    gateway_log = tmp_path / "gateway.log"
    gateway = Proc(
        "gateway",
        [sys.executable, "-m", "gateway"],
        {**env, "GATEWAY_CONFIG": str(config), "GATEWAY_PORT": str(gateway_port)},
        gateway_log,
    )
    gateway_url = f"http://127.0.0.1:{gateway_port}"
    products = gateway_url + "/api/v1/products"
    headers = {"Authorization": f"Bearer {issuer.token(['catalog:read'])}"}

    with running(gateway, *catalogs):
        for proc in catalogs:
            proc.start()
        gateway.start()
        async with ClientSession(timeout=ClientTimeout(total=2)) as probe:

            async def ready(url: str, proc: Proc) -> bool:
                assert proc.alive(), f"{proc.name} exited:\n{proc.tail()}"
                with contextlib.suppress(ClientError, TimeoutError):
                    async with probe.get(url) as resp:
                        return resp.status == 200
                return False

            for url, proc in zip(urls, catalogs, strict=True):
                await wait_until_async(
                    lambda u=url, p=proc: ready(u + "/health/ready", p),
                    DEADLINE,
                    proc.name,
                    interval=0.05,
                )
            await wait_until_async(
                lambda: ready(gateway_url + "/readyz", gateway),
                DEADLINE,
                "the gateway",
                interval=0.05,
            )

            # --- the load: four clients, GETs back to back, each with a bounded timeout
            loop = asyncio.get_running_loop()
            results: list[tuple[float, float, int | str]] = []
            stop = asyncio.Event()

            async def client() -> None:
                async with ClientSession(timeout=ClientTimeout(total=CLIENT_TIMEOUT)) as s:
                    while not stop.is_set():
                        began = loop.time()
                        outcome: int | str
                        try:
                            async with s.get(products, headers=headers) as resp:
                                await resp.read()
                                outcome = resp.status
                        except (ClientError, TimeoutError) as exc:
                            outcome = type(exc).__name__
                        results.append((began, loop.time(), outcome))

            clients = [asyncio.create_task(client()) for _ in range(CLIENTS)]
            try:

                async def served(minimum: int, offset: int = 0, only: str | None = None) -> bool:
                    assert gateway.alive(), gateway.tail()
                    counts = _served_by(gateway_log, offset)
                    wanted = [only] if only else urls
                    return all(counts[u] >= minimum for u in wanted)

                await wait_until_async(
                    lambda: served(30), DEADLINE, "both instances to take traffic", interval=0.05
                )

                # --- kill one instance under load
                victim = catalogs[1]
                killed_at = loop.time()
                victim.kill()
                settled_at = killed_at + DETECTION

                async def load_after_detection() -> bool:
                    return _count_since(results, settled_at) >= 150

                await wait_until_async(
                    load_after_detection, DEADLINE, "load after the kill", interval=0.05
                )

                # --- bring it back on the same port: it takes traffic again
                restart_offset = gateway_log.stat().st_size
                restarted_at = loop.time()
                victim.start()
                await wait_until_async(
                    lambda: ready(urls[1] + "/health/ready", victim),
                    DEADLINE,
                    "the restart",
                    interval=0.05,
                )
                await wait_until_async(
                    lambda: served(20, restart_offset, only=urls[1]),
                    DEADLINE,
                    "the restarted instance to take traffic",
                    interval=0.05,
                )
            finally:
                stop.set()
                await asyncio.gather(*clients)

    transition = [r for r in results if killed_at <= r[0] < restarted_at]
    failed_in_transition = [r for r in transition if r[2] != 200]
    failed_after_detection = [
        r for r in results if settled_at <= r[0] < restarted_at and r[2] != 200
    ]
    failed_after_restart = [r for r in results if r[0] >= restarted_at and r[2] != 200]
    failed_in_flight = [r for r in results if r[0] < killed_at <= r[1] and r[2] != 200]
    slowest = max(end - began for began, end, _ in results)
    statuses = Counter(outcome for _, _, outcome in results)
    after_restart = _served_by(gateway_log, restart_offset)
    events = _log_events(gateway_log)
    print(
        f"\nfailover: {len(results)} GETs by {CLIENTS} clients, outcomes {dict(statuses)}; "
        f"{len(failed_in_flight)} failed in flight at the kill, "
        f"{len(failed_in_transition)} of {len(transition)} failed during the transition "
        f"(kill -> restart), {len(failed_after_detection)} after the detection interval "
        f"({DETECTION:.2f}s), {len(failed_after_restart)} after the restart; "
        f"slowest {slowest:.3f}s; served after the restart "
        f"{dict(after_restart)}; gateway events {dict(events)}"
    )
    assert events["upstream instance is unhealthy"] >= 1  # the kill was seen, then undone:
    assert events["upstream instance is healthy"] >= 1
    assert not failed_after_detection, (failed_after_detection[:5], _warnings(gateway_log))
    assert not failed_after_restart, (failed_after_restart, _warnings(gateway_log))
    # Requests that finished before the kill all succeeded. One caught on the victim at the
    # kill (its response cut mid-body) may fail: it falls inside the detection interval.
    assert all(outcome == 200 for _, ended, outcome in results if ended < killed_at)
    assert slowest < CLIENT_TIMEOUT - 1, "a request hung"
    assert after_restart[urls[1]] >= 20
    assert after_restart[urls[0]] > 0


def _one_worker(argv: list[str]) -> list[str]:
    """`make up`'s gunicorn command line with one worker: lighter on a 2-core CI runner."""
    argv = list(argv)
    argv[argv.index("--workers") + 1] = "1"
    return argv


def _log_events(log: Path) -> Counter[str]:
    events: Counter[str] = Counter()
    for line in log.read_bytes().splitlines():
        with contextlib.suppress(orjson.JSONDecodeError):
            msg = orjson.loads(line).get("msg", "")
            if msg.startswith(("retrying", "upstream instance", "circuit breaker")):
                events[msg.split(":")[0] if msg.startswith("circuit") else msg] += 1
    return events


def _warnings(log: Path) -> list[str]:
    return [
        line.decode(errors="replace")
        for line in log.read_bytes().splitlines()
        if b'"level":"warning"' in line or b'"level":"error"' in line
    ][-30:]


def _count_since(results: list[tuple[float, float, int | str]], since: float) -> int:
    return sum(1 for began, _, _ in results if began >= since)
