"""Traffic split and rollback with real processes: two catalog releases (gunicorn, the second
started with CATALOG_RELEASE=2, which marks its answers `X-Catalog-Release: 2`) behind a
`python -m gateway` process whose route splits between them (ADR 0031).

- 1,000 requests from 100 consumers (tokens of 100 subjects) land within 3 points of the
  weight, each consumer always on one side; a reload raising the weight under load fails no
  request, and the consumers already on the canary stay there; a reload with a bad split is
  refused by key path and the running split stays.
- A canary that starts failing (its database table renamed away under it: every read and its
  readiness answer 5xx) is rolled back: all traffic goes to the stable release, a JSON log line
  with the correlation id and the metrics say so, and it stays so - even once the canary is
  healthy again - until a reload changes the split.

Processes are started by these tests and stopped by their process group id (`Proc`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from aiohttp import ClientError, ClientSession, ClientTimeout, web
from aiohttp.test_utils import TestServer

from chassis.db import sqlite_url
from tests.integration.test_gateway_failover import Proc, _one_worker, running
from tests.support.tokens import TestIssuer
from tests.support.waiting import wait_until_async
from tools.stack import _gunicorn, free_port

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 30.0  # for a process to start, or a condition to come true
ISSUER = "https://issuer.split.test"
CONSUMERS = 100
REQUESTS = 1_000
CLIENTS = 4
PRODUCTS = "/api/v1/products"


@pytest.fixture
async def jwks(aiohttp_server: Any) -> AsyncIterator[tuple[TestIssuer, str]]:
    """The JWKS endpoint the catalogs and the gateway fetch the test issuer's key from."""
    issuer = TestIssuer(issuer=ISSUER, lifetime=600)

    async def keys(_request: web.Request) -> web.Response:
        return web.json_response(issuer.jwks())

    app = web.Application()
    app.router.add_get("/.well-known/jwks.json", keys)
    server: TestServer = await aiohttp_server(app, host="127.0.0.1", port=free_port())
    yield issuer, str(server.make_url("/.well-known/jwks.json"))


@dataclass
class Stack:
    issuer: TestIssuer
    url: str  # the gateway's
    config: Path
    gateway: Proc
    catalogs: dict[str, Proc]  # "1" (stable) and "2" (canary)
    catalog_urls: dict[str, str]
    databases: dict[str, Path]
    log: Path
    jwks_url: str

    def write(self, split: dict[str, Any]) -> None:
        """The gateway config with this split on products.list (renamed over the old file)."""
        raw = {
            "server": {"host": "127.0.0.1", "port": 0},
            "auth": {"issuer": ISSUER, "audience": "portico-api", "jwks_url": self.jwks_url},
            "upstreams": {
                name: {
                    "instances": [self.catalog_urls[release]],
                    "timeout": 5.0,
                    "health": {"path": "/health/ready", "interval": 0.25, "timeout": 1.0},
                }
                for name, release in (("catalog", "1"), ("catalog-v2", "2"))
            },
            "routes": [
                {
                    "name": "products.list",
                    "methods": ["GET"],
                    "path": PRODUCTS,
                    "upstream": "catalog",
                    "auth": {"scopes": ["catalog:read"]},
                    "split": split,
                }
            ],
        }
        tmp = self.config.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(raw), encoding="utf-8")
        os.replace(tmp, self.config)

    def lines(self, msg: str) -> list[dict[str, Any]]:
        """The gateway's JSON log lines with this message."""
        found = []
        for line in self.log.read_bytes().splitlines():
            with contextlib.suppress(orjson.JSONDecodeError):
                doc = orjson.loads(line)
                if isinstance(doc, dict) and doc.get("msg") == msg:
                    found.append(doc)
        return found

    def rejections(self) -> list[str]:
        """The messages of the gateway's refused reloads."""
        return [
            str(doc.get("msg", ""))
            for line in self.log.read_bytes().splitlines()
            if b"config rejected" in line
            for doc in [orjson.loads(line)]
        ]

    async def reload(self, split: dict[str, Any]) -> None:
        """Write `split`, SIGHUP the gateway, wait for its "reloaded" line."""
        before = len(self.lines("gateway config reloaded"))
        self.write(split)
        assert self.gateway.popen is not None
        os.kill(self.gateway.popen.pid, signal.SIGHUP)

        async def reloaded() -> bool:
            assert self.gateway.alive(), self.gateway.tail()
            return len(self.lines("gateway config reloaded")) > before

        await wait_until_async(reloaded, DEADLINE, "the reload", interval=0.05)


async def _init_catalog(env: dict[str, str]) -> None:
    init = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.catalog", "init", "--seed-demo",
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    async with asyncio.timeout(DEADLINE):
        output, _ = await init.communicate()
    assert init.returncode == 0, output.decode(errors="replace")


@pytest.fixture
async def stack(jwks: tuple[TestIssuer, str], tmp_path: Path) -> AsyncIterator[Stack]:
    """Two catalog releases, each on its own SQLite file, and a gateway in front of them."""
    issuer, jwks_url = jwks
    env = {
        **os.environ,
        "PORTICO_ISSUER": ISSUER,
        "PORTICO_AUDIENCE": "portico-api",
        "PORTICO_JWKS_URL": jwks_url,
        "CATALOG_LOG_LEVEL": "WARNING",
        "CATALOG_RELAY": "false",  # reads only: no events, no broker
        "CATALOG_CACHE_ENTRIES": "0",
        "PYTHONUNBUFFERED": "1",
    }
    catalogs: dict[str, Proc] = {}
    urls: dict[str, str] = {}
    databases: dict[str, Path] = {}
    for release in ("1", "2"):
        databases[release] = tmp_path / f"catalog{release}.db"
        own = {
            **env,
            "CATALOG_DATABASE_URL": sqlite_url(databases[release]),
            "CATALOG_RELEASE": release,
        }
        await _init_catalog(own)
        port = free_port()
        urls[release] = f"http://127.0.0.1:{port}"
        argv = _one_worker(_gunicorn("catalog", port))
        catalogs[release] = Proc(f"catalog{release}", argv, own, tmp_path / f"c{release}.log")
    port = free_port()
    config = tmp_path / "gateway.yaml"
    log = tmp_path / "gateway.log"
    gateway = Proc(
        "gateway",
        [sys.executable, "-m", "gateway"],
        {**env, "GATEWAY_CONFIG": str(config), "GATEWAY_PORT": str(port)},
        log,
    )
    found = Stack(
        issuer=issuer,
        url=f"http://127.0.0.1:{port}",
        config=config,
        gateway=gateway,
        catalogs=catalogs,
        catalog_urls=urls,
        databases=databases,
        log=log,
        jwks_url=jwks_url,
    )
    found.write({"weights": {"catalog": 80, "catalog-v2": 20}})
    with running(gateway, *catalogs.values()):
        for proc in catalogs.values():
            proc.start()
        gateway.start()
        for release, proc in catalogs.items():
            await _ready(urls[release] + "/health/ready", proc)
        await _ready(found.url + "/readyz", gateway)
        yield found


async def _ready(url: str, proc: Proc) -> None:
    async with ClientSession(timeout=ClientTimeout(total=2)) as probe:

        async def ok() -> bool:
            assert proc.alive(), f"{proc.name} exited:\n{proc.tail()}"
            with contextlib.suppress(ClientError, TimeoutError):
                async with probe.get(url) as resp:
                    return resp.status == 200
            return False

        await wait_until_async(ok, DEADLINE, proc.name, interval=0.05)


@dataclass
class Result:
    consumer: int
    status: int | str
    release: str | None
    rid: str | None


async def _get(session: ClientSession, stack: Stack, token: str, consumer: int) -> Result:
    try:
        async with session.get(
            stack.url + PRODUCTS, headers={"Authorization": f"Bearer {token}"}
        ) as resp:
            await resp.read()
            return Result(
                consumer,
                resp.status,
                resp.headers.get("X-Catalog-Release"),
                resp.headers.get("X-Request-Id"),
            )
    except (ClientError, TimeoutError) as exc:
        return Result(consumer, type(exc).__name__, None, None)


def _tokens(issuer: TestIssuer) -> list[str]:
    return [issuer.token(["catalog:read"], sub=f"consumer-{i}") for i in range(CONSUMERS)]


async def _load(
    stack: Stack, tokens: list[str], *, count: int | None = None, stop: asyncio.Event | None = None
) -> list[Result]:
    """Requests by CLIENTS concurrent clients taking consumers in turn: `count` of them, or
    until `stop` is set."""
    results: list[Result] = []
    turn = iter(range(10**9))

    async def client() -> None:
        async with ClientSession(timeout=ClientTimeout(total=10)) as session:
            while True:
                n = next(turn)
                if (count is not None and n >= count) or (stop is not None and stop.is_set()):
                    return
                consumer = n % CONSUMERS
                results.append(await _get(session, stack, tokens[consumer], consumer))

    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    return results


def _sides(results: list[Result]) -> dict[int, set[str | None]]:
    sides: dict[int, set[str | None]] = {}
    for r in results:
        sides.setdefault(r.consumer, set()).add(r.release)
    return sides


async def test_a_split_by_weight_keeps_consumers_and_survives_a_reload(stack: Stack) -> None:
    tokens = _tokens(stack.issuer)
    results = await _load(stack, tokens, count=REQUESTS)
    statuses = Counter(r.status for r in results)
    assert statuses == {200: REQUESTS}, statuses
    sides = _sides(results)
    assert len(sides) == CONSUMERS
    mixed = {c: s for c, s in sides.items() if len(s) != 1}
    assert not mixed, mixed  # each consumer always on one side
    share = 100 * sum(1 for r in results if r.release == "2") / len(results)
    assert abs(share - 20) <= 3, share
    before = {c for c, s in sides.items() if s == {"2"}}

    # --- a reload raising the canary's weight, under load: no request fails
    stop = asyncio.Event()
    load = asyncio.create_task(_load(stack, tokens, stop=stop))
    try:
        await wait_until_async(
            lambda: _ran(stack, 100), DEADLINE, "load before the reload", interval=0.05
        )
        await stack.reload({"weights": {"catalog": 50, "catalog-v2": 50}})
        offset = _requests_logged(stack)
        await wait_until_async(
            lambda: _ran(stack, offset + 300), DEADLINE, "load after the reload", interval=0.05
        )
    finally:
        stop.set()
        during = await load
    outcomes = Counter(r.status for r in during)
    assert outcomes == {200: len(during)}, outcomes
    after = await _load(stack, tokens, count=REQUESTS)
    assert Counter(r.status for r in after) == {200: REQUESTS}
    sides_after = _sides(after)
    assert all(len(s) == 1 for s in sides_after.values())
    share_after = 100 * sum(1 for r in after if r.release == "2") / len(after)
    assert abs(share_after - 50) <= 10, share_after  # 100 consumers: the hash's spread
    # raising a canary's weight only moves stable consumers onto it
    assert all(sides_after[c] == {"2"} for c in before)

    # --- a bad split is refused by key path and the running one stays
    refused = len(stack.rejections())
    stack.write({"weights": {"catalog": 50, "catalog-v2": 60}, "rollback": {"error_rate": 2}})
    assert stack.gateway.popen is not None
    os.kill(stack.gateway.popen.pid, signal.SIGHUP)

    async def rejected() -> bool:
        return len(stack.rejections()) > refused

    await wait_until_async(rejected, DEADLINE, "the refused reload", interval=0.05)
    message = stack.rejections()[-1]
    assert "routes[0].split.weights: must add up to 100, not 110" in message, message
    assert "routes[0].split.rollback.error_rate: must be in (0, 1]" in message, message
    kept = await _load(stack, tokens, count=200)
    assert all(r.status == 200 for r in kept)
    assert all(_sides([r])[r.consumer] == sides_after[r.consumer] for r in kept)
    print(
        f"\nsplit: 20% -> {share:.1f}% of {REQUESTS} requests on the canary; during the reload "
        f"{len(during)} requests, {dict(outcomes)}; 50% -> {share_after:.1f}%"
    )


def _requests_logged(stack: Stack) -> int:
    return sum(1 for line in stack.log.read_bytes().splitlines() if b'"msg":"request"' in line)


async def _ran(stack: Stack, minimum: int) -> bool:
    assert stack.gateway.alive(), stack.gateway.tail()
    return _requests_logged(stack) >= minimum


ROLLBACK = {
    "weights": {"catalog": 50, "catalog-v2": 50},
    "sticky": False,  # every other request on the canary: a bounded, known count
    "rollback": {"window": 60, "min_requests": 10, "error_rate": 0.5},
}


def _rename(database: Path, old: str, new: str) -> None:
    """What breaks (and heals) the canary: its products table renamed under it."""
    with contextlib.closing(sqlite3.connect(database)) as db:
        db.execute(f"ALTER TABLE {old} RENAME TO {new}")
        db.commit()


async def test_a_failing_canary_is_rolled_back_until_the_split_changes(stack: Stack) -> None:
    await stack.reload(ROLLBACK)
    tokens = _tokens(stack.issuer)
    async with ClientSession(timeout=ClientTimeout(total=10)) as session:

        async def run(n: int) -> list[Result]:
            return [await _get(session, stack, tokens[i % CONSUMERS], i) for i in range(n)]

        healthy = await run(20)
        assert Counter(r.release for r in healthy) == {"1": 10, "2": 10}
        assert all(r.status == 200 for r in healthy)

        _rename(stack.databases["2"], "products", "products_gone")  # the canary breaks
        failing = await run(60)
        failed = [r for r in failing if r.status != 200]
        [event] = stack.lines("split rolled back to the stable upstream")
        # the window held 10 good answers: the 10th bad one made it 50%, then all went stable
        assert len(failed) == 10, Counter(r.status for r in failing)
        assert all(r.status in (500, 503) for r in failed)
        tripped = failing.index(failed[-1])
        assert all(r.status == 200 and r.release == "1" for r in failing[tripped + 1 :])
        assert event["correlation_id"] == failed[-1].rid
        assert (event["route"], event["canary"], event["reason"]) == (
            "products.list",
            "catalog-v2",
            "error_rate",
        )
        assert event["level"] == "warning"
        metrics = await _metrics(session, stack)
        assert 'gateway_split_state{route="products.list"} 0.0' in metrics
        assert (
            'gateway_split_rollbacks_total{reason="error_rate",route="products.list",'
            'upstream="catalog-v2"} 1.0'
        ) in metrics

        # the canary heals: the split stays rolled back (nothing changed in the config)
        _rename(stack.databases["2"], "products_gone", "products")
        await _ready(stack.catalog_urls["2"] + "/health/ready", stack.catalogs["2"])
        held = await run(20)
        assert {(r.status, r.release) for r in held} == {(200, "1")}

        # a reload that changes the split re-arms it
        await stack.reload({**ROLLBACK, "weights": {"catalog": 60, "catalog-v2": 40}})
        await _wait_canary_ready(session, stack)
        rearmed = await run(20)
        assert all(r.status == 200 for r in rearmed)
        assert Counter(r.release for r in rearmed) == {"1": 12, "2": 8}
        assert 'gateway_split_state{route="products.list"} 1.0' in await _metrics(session, stack)
    print(f"\nrollback: {len(failed)} canary failures before the rollback, then all stable")


async def _metrics(session: ClientSession, stack: Stack) -> str:
    async with session.get(stack.url + "/metrics") as resp:
        return await resp.text()


async def _wait_canary_ready(session: ClientSession, stack: Stack) -> None:
    """The gateway's health check has the canary back in rotation (its /readyz says so)."""

    async def ready() -> bool:
        async with session.get(stack.url + "/readyz") as resp:
            return resp.status == 200

    await wait_until_async(ready, DEADLINE, "the canary back in rotation", interval=0.05)
