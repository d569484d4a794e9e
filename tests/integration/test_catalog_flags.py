"""Catalog under gunicorn (two workers, as `make up` runs it) with a flags file of its own:
API v2 follows `catalog.v2_products` per client, an edit reaches every worker without a
restart, and a file that does not parse keeps the last good flags and is counted."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from chassis import sqlite_url
from tests.integration.test_gateway_failover import ISSUER, ROOT, Proc, jwks, running
from tests.support.tokens import TestIssuer
from tests.support.waiting import wait_until_async
from tools.stack import _gunicorn, free_port

__all__ = ["jwks"]  # the fixture, used here

FLAG = "catalog.v2_products"


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text + f"\n# {time.monotonic_ns()}\n", encoding="utf-8")
    os.replace(tmp, path)


def _status(url: str, token: str | None = None) -> int:
    request = urllib.request.Request(url)
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


async def test_v2_follows_the_flags_file_in_every_worker(
    jwks: tuple[TestIssuer, str], tmp_path: Path
) -> None:
    issuer, jwks_url = jwks
    flags = tmp_path / "flags.yaml"
    _write(flags, f"flags: {{{FLAG}: false}}")
    env = {
        **os.environ,
        "PORTICO_ISSUER": ISSUER,
        "PORTICO_AUDIENCE": "portico-api",
        "PORTICO_JWKS_URL": jwks_url,
        "PORTICO_FLAGS_FILE": str(flags),
        "PORTICO_FLAGS_RELOAD_INTERVAL": "0.1",
        "CATALOG_DATABASE_URL": sqlite_url(tmp_path / "catalog.db"),
        "CATALOG_LOG_LEVEL": "WARNING",
        "CATALOG_RELAY": "false",
        "PYTHONUNBUFFERED": "1",
    }
    init = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "services.catalog", "init", "--seed-demo"],
        cwd=ROOT, env=env, capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert init.returncode == 0, init.stdout + init.stderr
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    catalog = Proc("catalog", _gunicorn("catalog", port), env, tmp_path / "catalog.log")
    early = issuer.token(["catalog:read"], sub="early")
    late = issuer.token(["catalog:read"], sub="late")
    v2 = f"{base}/api/v2/products"
    with running(catalog):
        catalog.start()
        await wait_until_async(
            lambda: asyncio.to_thread(_ok, base + "/health/ready"), 60, "catalog to start"
        )
        # the JWKS server runs on this loop: blocking calls go to a thread
        assert await asyncio.to_thread(_status, v2, early) == 404  # off for everyone
        assert await asyncio.to_thread(_status, f"{base}/api/v1/products", early) == 200

        _write(
            flags, f"flags: {{{FLAG}: {{enabled: true, percent: 0, allow: {{clients: [early]}}}}}}"
        )

        def on_everywhere() -> bool:  # ten answers in a row: both workers have seen it
            return all(_status(v2, early) == 200 for _ in range(10))

        await wait_until_async(
            lambda: asyncio.to_thread(on_everywhere), 20, "v2 on for early in every worker"
        )
        assert await asyncio.to_thread(_status, v2, late) == 404

        _write(flags, "flags: {" + FLAG + ": {enabled: fals")  # does not parse

        def counted() -> bool:
            assert _status(v2, early) == 200  # the last good flags stay
            with urllib.request.urlopen(base + "/metrics", timeout=5) as resp:
                return "portico_flags_reload_errors_total 1.0" in resp.read().decode()

        await wait_until_async(lambda: asyncio.to_thread(counted), 20, "the bad file counted")
        assert await asyncio.to_thread(on_everywhere)
        assert catalog.alive(), catalog.tail()


def _ok(url: str) -> bool:
    try:
        return _status(url) == 200
    except OSError:
        return False
