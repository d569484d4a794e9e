"""Zero failed requests across a graceful stop (issue 20, must 3; ADR 0033), with real
processes: nginx (the shipped template, TLS) in front of two gateways, which balance over two
catalog instances (gunicorn, one SQLite file), under a steady load from four clients.

SIGTERM one catalog instance (its gunicorn master, as an orchestrator sends it) and one
gateway: each finishes what it holds and exits 0, the others take the traffic, and every
request of the load is answered. One client creates products (POST): nginx never sends a
non-idempotent request that reached a gateway to the other one, so a gateway that dropped the
requests it held (instead of finishing them) fails this test, which GETs alone would not
show. No timing is asserted: every wait is a condition with a deadline and every client
request has a bounded timeout.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import ssl
import subprocess
import sys
import uuid
from collections import Counter
from pathlib import Path

import yaml
from aiohttp import ClientError, ClientSession, ClientTimeout, TCPConnector

from chassis.db import sqlite_url
from tests.e2e.test_edge_nginx import _nginx
from tests.integration.test_gateway_failover import (
    ISSUER,
    ROOT,
    Proc,
    _gateway_config,
    _one_worker,
    jwks,  # noqa: F401  (the fixture)
    running,
)
from tests.support.tokens import TestIssuer
from tests.support.waiting import wait_until_async
from tools import edge
from tools.stack import _gunicorn, free_port

DEADLINE = 60.0
CLIENTS = 4
CLIENT_TIMEOUT = 10.0


async def test_sigterm_to_a_catalog_and_a_gateway_under_load_fails_no_request(
    jwks: tuple[TestIssuer, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    binary = _nginx()
    issuer, jwks_url = jwks
    env = {
        **os.environ,
        "PORTICO_ISSUER": ISSUER,
        "PORTICO_AUDIENCE": "portico-api",
        "PORTICO_JWKS_URL": jwks_url,
        "CATALOG_DATABASE_URL": sqlite_url(tmp_path / "catalog.db"),
        "CATALOG_LOG_LEVEL": "WARNING",
        "CATALOG_RELAY": "false",
        "PYTHONUNBUFFERED": "1",
        # as the Kubernetes base sets it (5 s there): readiness 503 while still serving, long
        # enough for the gateways' health checks (every 0.25 s here) to take a catalog out
        "PORTICO_DRAIN_DELAY": "2",
    }
    init = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.catalog", "init", "--seed-demo"],
        cwd=ROOT, env=env, capture_output=True, check=False, timeout=DEADLINE,
    )  # fmt: skip
    assert init.returncode == 0, init.stdout + init.stderr
    ports = [free_port(), free_port()]
    urls = [f"http://127.0.0.1:{p}" for p in ports]
    catalogs = [
        Proc(f"catalog{i}", _one_worker(_gunicorn("catalog", port)), env, tmp_path / f"c{i}.log")
        for i, port in enumerate(ports)
    ]
    config = tmp_path / "gateway.yaml"
    gateway_config = _gateway_config(urls, jwks_url)
    gateway_config["routes"].append(
        {
            "name": "products.create",
            "methods": ["POST"],
            "path": "/api/v1/products",
            "upstream": "catalog",
            "auth": {"scopes": ["catalog:write"]},
        }
    )
    config.write_text(yaml.safe_dump(gateway_config))
    gateway_ports = [free_port(), free_port()]
    gateways = [
        Proc(
            f"gateway{i}",
            [sys.executable, "-m", "gateway"],
            {**env, "GATEWAY_CONFIG": str(config), "GATEWAY_PORT": str(port)},
            tmp_path / f"g{i}.log",
        )
        for i, port in enumerate(gateway_ports)
    ]
    edge_dir = tmp_path / "edge"
    certs = edge.ensure_certs(edge_dir / "certs")
    https = free_port()
    target = edge.local_target(gateway_ports, edge_dir, https_port=https, http_port=free_port())
    conf = edge.write_config(target, edge_dir / "nginx.conf")
    work_dir = Path(target.work_dir)
    edge.check_config(conf, work_dir, binary)
    nginx = Proc("nginx", edge.nginx_argv(conf, work_dir, binary), env, tmp_path / "nginx.log")
    products = f"https://127.0.0.1:{https}/api/v1/products"
    headers = {"Authorization": f"Bearer {issuer.token(['catalog:read', 'catalog:write'])}"}
    tls = ssl.create_default_context(cafile=str(certs.ca_cert))

    with running(nginx, *gateways, *catalogs):
        for proc in (*catalogs, *gateways):
            proc.start()
        async with ClientSession(timeout=ClientTimeout(total=2)) as probe:

            async def ready(url: str, proc: Proc) -> bool:
                assert proc.alive(), f"{proc.name} exited:\n{proc.tail()}"
                with contextlib.suppress(ClientError, TimeoutError):
                    async with probe.get(url) as resp:
                        return resp.status == 200
                return False

            probes = [u + "/health/ready" for u in urls]
            probes += [f"http://127.0.0.1:{p}/readyz" for p in gateway_ports]
            for url, proc in zip(probes, (*catalogs, *gateways), strict=True):
                await wait_until_async(
                    lambda u=url, p=proc: ready(u, p), DEADLINE, proc.name, interval=0.05
                )
        nginx.start()
        assert nginx.popen is not None
        await asyncio.to_thread(edge.wait_tls, https, certs.ca_cert, nginx.popen)

        outcomes: Counter[str] = Counter()
        stop = asyncio.Event()

        async def client(writes: bool) -> None:
            connector = TCPConnector(ssl=tls)
            timeout = ClientTimeout(total=CLIENT_TIMEOUT)
            async with ClientSession(connector=connector, timeout=timeout) as session:
                while not stop.is_set():
                    outcome: str
                    if writes:
                        sku = f"DR-{uuid.uuid4().hex[:12].upper()}"
                        body = {"sku": sku, "name": sku, "category": "books", "price": "1.00"}
                        call = session.post(
                            products,
                            json=body,
                            headers={**headers, "Idempotency-Key": uuid.uuid4().hex},
                        )
                    else:
                        call = session.get(products, headers=headers)
                    try:
                        async with call as resp:
                            await resp.read()
                            outcome = f"{resp.method} {resp.status}"
                    except (ClientError, TimeoutError) as exc:
                        outcome = type(exc).__name__
                    outcomes[outcome] += 1

        async def answered(count: int) -> bool:
            return sum(outcomes.values()) >= count

        tasks = [asyncio.create_task(client(writes=i == 0)) for i in range(CLIENTS)]
        try:
            await wait_until_async(lambda: answered(100), DEADLINE, "load before", interval=0.05)
            for proc in (catalogs[1], gateways[0]):  # the master's PID, as an orchestrator does
                assert proc.popen is not None
                proc.popen.send_signal(signal.SIGTERM)
            for proc in (catalogs[1], gateways[0]):
                assert proc.popen is not None
                code = await asyncio.to_thread(proc.popen.wait, DEADLINE)
                assert code == 0, f"{proc.name} exited with {code}:\n{proc.tail()}"
            after = sum(outcomes.values()) + 200
            await wait_until_async(lambda: answered(after), DEADLINE, "load after", interval=0.05)
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)

    assert set(outcomes) == {"GET 200", "POST 201"}, _diagnosis(outcomes, work_dir, tmp_path)


def _diagnosis(outcomes: Counter[str], work_dir: Path, tmp_path: Path) -> str:
    """What failed and where: nginx's lines of failed answers, the processes' warnings."""
    lines = [str(dict(outcomes))]
    access = work_dir / "log" / "access.log"
    if access.exists():
        lines += [ln for ln in access.read_text(errors="replace").splitlines() if '":5' in ln]
    for log in sorted(tmp_path.glob("*.log")):
        for ln in log.read_text(errors="replace").splitlines():
            if '"level":"warning"' in ln or '"level":"error"' in ln or "Traceback" in ln:
                lines.append(f"{log.name}: {ln[:400]}")
    return "\n".join(lines[:60])
