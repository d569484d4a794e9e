"""The service rows of `make bench`: each service's main read (and orders' write) straight,
no gateway, on SQLite and on PostgreSQL.

Each row starts the service on its own database (a file under the bench's temporary directory,
or a throwaway PostgreSQL database created for the row and dropped after it), seeds what the
read needs through the service's own API or `init --seed-demo`, and runs wrk against it. The
CPU figure is the service's process tree (gunicorn master and workers, or the one aiohttp
process) over the requests wrk completed. Services log at INFO, as deployed: the JSON access
line of every request is part of the cost (written to the row's log file).

`POST /api/v1/orders` runs the whole order on orders' side: the request (a new
Idempotency-Key each time), the catalog price lookup and then the saga (reserve, charge,
commit) in the same process. Its peers are `tests.bench.servers saga-peers`, which answer at
once and are not counted; orders' CPU is read again once the saga backlog has drained, so the
figure is orders' whole cost of one accepted and confirmed order.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import reserve
from .harness import (
    PY,
    ROOT,
    WRK_LUA,
    BenchError,
    Proc,
    Processes,
    Run,
    cpu_seconds,
    descendants,
    free_port,
    wait_http,
    wrk,
)

__all__ = ["DATABASES", "service_rows"]

DATABASES = ("sqlite", "postgresql")
PG_ADMIN = os.environ.get("BENCH_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

POST_LUA = """
wrk.method = "POST"
wrk.body = '{"items":[{"sku":"%(sku)s","quantity":1}],"payment_method":"pm_card_ok"}'
wrk.headers["Content-Type"] = "application/json"
local n = 0
request = function()
  n = n + 1
  wrk.headers["Idempotency-Key"] = "%(prefix)s-" .. n
  return wrk.format()
end
"""


@dataclass
class Target:
    """One row: how to start the service and what wrk asks it."""

    name: str
    service: str
    env: dict[str, str]
    path: str
    scopes: list[str]
    seed: Callable[[str, dict[str, str]], str] | None = None  # base URL, headers -> path
    post_sku: str | None = None  # a POST row: orders with this sku


def _gunicorn(app: str, *worker_args: str) -> Callable[[int], list[str]]:
    def argv(port: int) -> list[str]:
        return [PY, "-m", "gunicorn", app, "-b", f"127.0.0.1:{port}", *worker_args]

    return argv


@contextlib.contextmanager
def database(kind: str, name: str, workdir: Path, *, asyncio: bool) -> Iterator[str]:
    """A fresh database URL for one row; PostgreSQL's is dropped afterwards."""
    if kind == "sqlite":
        path = workdir / f"{name}-{uuid.uuid4().hex[:8]}.db"
        yield f"sqlite+aiosqlite:///{path}" if asyncio else f"sqlite:///{path}"
        return
    import psycopg

    db = f"portico_bench_{name}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    base = PG_ADMIN.rsplit("/", 1)[0].split("://", 1)[1]
    driver = "postgresql+asyncpg" if asyncio else "postgresql+psycopg"
    try:
        yield f"{driver}://{base}/{db}"
    finally:
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def _request(
    method: str, url: str, headers: dict[str, str], body: dict[str, Any] | None = None
) -> tuple[int, dict[str, str], Any]:
    data = json.dumps(body).encode() if body is not None else None
    hdrs = {**headers, **({"Content-Type": "application/json"} if data else {})}
    req = urllib.request.Request(url, data=data, headers=hdrs, method=method)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, dict(resp.headers), json.loads(resp.read() or b"null")


def _seed_order(sku: str) -> Callable[[str, dict[str, str]], str]:
    def seed(base: str, headers: dict[str, str]) -> str:
        body = {"items": [{"sku": sku, "quantity": 1}], "payment_method": "pm_card_ok"}
        hdrs = {**headers, "Idempotency-Key": f"seed-{uuid.uuid4().hex}"}
        _, _, doc = _request("POST", base + "/api/v1/orders", hdrs, body)
        return f"/api/v1/orders/{doc['id']}"

    return seed


def _seed_payment(base: str, headers: dict[str, str]) -> str:
    body = {
        "order_id": f"bench-{uuid.uuid4().hex[:12]}",
        "amount": "19.99",
        "currency": "EUR",
        "payment_method": "pm_card_ok",
    }
    hdrs = {**headers, "Idempotency-Key": f"seed-{uuid.uuid4().hex}"}
    _, _, doc = _request("POST", base + "/api/v1/payments", hdrs, body)
    return f"/api/v1/payments/{doc['id']}"


def _settle(pids: list[int], quiet: float = 0.5, limit: float = 30.0) -> None:
    """Wait until the process tree stops working (the saga backlog has drained)."""
    deadline = time.monotonic() + limit
    last = cpu_seconds(pids)
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = cpu_seconds(pids)
        if now - last < 0.02 * quiet:  # under 2% of a CPU: idle but for the pollers
            return
        last = now


def _run(
    target: Target, url: str, headers: dict[str, str], script: Path, pids: list[int], args: Any
) -> Run:
    if target.post_sku is None:
        return wrk(
            url,
            connections=args.connections,
            duration=args.duration,
            script=script,
            headers=headers,
            cpu_pids=pids,
        )
    post = script.with_name(f"post-{uuid.uuid4().hex[:8]}.lua")
    post.write_text(POST_LUA % {"sku": target.post_sku, "prefix": uuid.uuid4().hex[:12]} + WRK_LUA)
    before = cpu_seconds(pids)
    run = wrk(
        url,
        connections=args.connections,
        duration=args.duration,
        script=post,
        headers=headers,
        cpu_pids=[],
    )
    _settle(pids)
    total = run.rps * args.duration  # wrk's requests, as its duration counted them
    run.cpu_us = (cpu_seconds(pids) - before) / total * 1e6
    return run


def measure(
    procs: Processes,
    args: argparse.Namespace,
    issuer: Any,
    script: Path,
    target: Target,
    start: Callable[[int], list[str]],
) -> dict[str, Any]:
    port = free_port()
    env = {**target.env, f"{target.service.upper()}_PORT": str(port)}
    proc: Proc = procs.start(target.service, start(port), env)
    base = f"http://127.0.0.1:{port}"
    headers = {"Authorization": f"Bearer {issuer.token(scopes=target.scopes, sub='bench-user')}"}
    try:
        wait_http(base + "/health/live", proc, headers)
        path = target.seed(base, headers) if target.seed else target.path
        wait_http(base + path, proc, headers)
        pids = descendants(proc.pid)
        runs = [
            _run(target, base + path, headers, script, pids, args)
            for _ in range(max(1, args.rounds // 2))
        ]
        return {
            "name": target.name,
            "rps": statistics.median(r.rps for r in runs),
            "p99_ms": statistics.median(r.p99_ms for r in runs),
            "cpu_us_per_req": statistics.median(r.cpu_us or 0 for r in runs),
            "cpu_us_runs": [round(r.cpu_us or 0) for r in runs],
            "errors": sum(r.errors for r in runs),
        }
    except (BenchError, OSError, KeyError, ValueError) as exc:
        return {"name": target.name, "status": f"failed: {str(exc).splitlines()[0]}"}
    finally:
        procs.stop(proc)


def _init(service: str, env: dict[str, str], *extra: str) -> str | None:
    done = subprocess.run(
        [PY, "-m", f"services.{service}", "init", *extra],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return None if done.returncode == 0 else done.stderr.strip()[-300:]


@dataclass
class Context:
    kind: str  # sqlite | postgresql
    tokens: dict[str, str]  # PORTICO_* for every service
    sku: str  # a demo sku: inventory's read, orders' items
    peer: str  # the saga peers' base URL


Build = Callable[[str, Context], list[tuple[Target, Callable[[int], list[str]] | str]]]


def _catalog(url: str, ctx: Context) -> list[tuple[Target, Callable[[int], list[str]] | str]]:
    env = {**ctx.tokens, "CATALOG_DATABASE_URL": url, "CATALOG_LOG_LEVEL": "INFO"}
    env["CATALOG_RELAY"] = "false"  # no broker here: the read path does not publish
    err = _init("catalog", env, "--seed-demo")
    app = "services.catalog.app:create_app()"
    rows: list[tuple[Target, Callable[[int], list[str]] | str]] = []
    for label, workers in (
        ("gunicorn sync x2", ("-w", "2")),
        ("gunicorn gthread 2x4", ("-w", "2", "-k", "gthread", "--threads", "4")),
    ):
        name = f"catalog GET /api/v1/products (20 items), {label} [{ctx.kind}]"
        target = Target(name, "catalog", env, "/api/v1/products", ["catalog:read"])
        rows.append((target, err or _gunicorn(app, *workers)))
    return rows


def _inventory(url: str, ctx: Context) -> list[tuple[Target, Callable[[int], list[str]] | str]]:
    env = {**ctx.tokens, "INVENTORY_DATABASE_URL": url, "INVENTORY_LOG_LEVEL": "INFO"}
    env["INVENTORY_GRPC_PORT"] = "0"  # the bench measures REST; no fixed port to collide on
    env["INVENTORY_RELAY"] = "false"
    err = _init("inventory", env, "--seed-demo")
    name = f"inventory GET /api/v1/inventory/{{sku}}, aiohttp x1 [{ctx.kind}]"
    target = Target(name, "inventory", env, f"/api/v1/inventory/{ctx.sku}", ["inventory:read"])
    return [(target, err or (lambda _p: [PY, "-m", "services.inventory", "serve"]))]


def _orders(url: str, ctx: Context) -> list[tuple[Target, Callable[[int], list[str]] | str]]:
    env = {**ctx.tokens, "ORDERS_DATABASE_URL": url, "ORDERS_LOG_LEVEL": "INFO"}
    env |= {"ORDERS_PUBLISH_EVENTS": "false", "ORDERS_CLIENT_ID": "bench"}
    env |= {"ORDERS_CLIENT_SECRET": "bench", "ORDERS_TOKEN_URL": ctx.peer + "/oauth/token"}
    env |= {f"ORDERS_{s}_URL": ctx.peer for s in ("CATALOG", "INVENTORY", "PAYMENTS")}
    env["ORDERS_INVENTORY_TRANSPORT"] = "rest"  # the peer plays inventory over REST (ADR 0027)
    err = _init("orders", env)
    scopes = ["orders:read", "orders:write"]
    serve = err or (lambda _p: [PY, "-m", "services.orders", "serve"])
    read = Target(
        f"orders GET /api/v1/orders/{{id}}, aiohttp x1 [{ctx.kind}]",
        "orders",
        env,
        "",
        scopes,
        seed=_seed_order(ctx.sku),
    )
    write = Target(
        f"orders POST /api/v1/orders (+ its saga), aiohttp x1 [{ctx.kind}]",
        "orders",
        env,
        "/api/v1/orders",
        scopes,
        post_sku=ctx.sku,
    )
    return [(read, serve), (write, serve)]


def _payments(url: str, ctx: Context) -> list[tuple[Target, Callable[[int], list[str]] | str]]:
    env = {**ctx.tokens, "PAYMENTS_DATABASE_URL": url, "PAYMENTS_LOG_LEVEL": "INFO"}
    env["PAYMENTS_RELAY"] = "false"
    err = _init("payments", env)
    name = f"payments GET /api/v1/payments/{{id}}, gunicorn sync x2 [{ctx.kind}]"
    target = Target(
        name, "payments", env, "", ["payments:read", "payments:write"], seed=_seed_payment
    )
    return [(target, err or _gunicorn("services.payments.app:create_app()", "-w", "2"))]


# service, async driver, builder, the row names' beginnings (for --rows)
PLAN: list[tuple[str, bool, Build, tuple[str, ...]]] = [
    (
        "catalog",
        False,
        _catalog,
        (
            "catalog GET /api/v1/products (20 items), gunicorn sync x2",
            "catalog GET /api/v1/products (20 items), gunicorn gthread",
        ),
    ),
    ("inventory", True, _inventory, ("inventory GET",)),
    ("orders", True, _orders, ("orders GET", "orders POST")),
    ("payments", False, _payments, ("payments GET",)),
]


def _reserve(
    procs: Processes, args: argparse.Namespace, issuer: Any, ctx: Context
) -> list[dict[str, Any]]:
    """The reserve pair (tests.bench.reserve) on a database of its own."""
    names = (f"{reserve.GRPC_ROW} [{ctx.kind}]", f"{reserve.REST_ROW} [{ctx.kind}]")
    try:
        with database(ctx.kind, "reserve", procs.workdir, asyncio=True) as url:
            env = reserve.inventory_env(url, ctx.tokens)
            err = _init("inventory", env)
            if err:
                return [{"name": n, "status": f"failed: init: {err}"} for n in names]
            print(f"  {names[0]} / REST ...", file=sys.stderr, flush=True)
            return reserve.measure_reserve(procs, args, issuer, env, ctx.kind)
    except Exception as exc:  # a database that cannot be created fails its rows only
        return [{"name": n, "status": f"failed: {exc!r}"[:200]} for n in names]


def service_rows(
    procs: Processes,
    args: argparse.Namespace,
    issuer: Any,
    jwks_url: str,
    script: Path,
    wanted: Callable[[str], bool] = lambda _name: True,
) -> list[dict[str, Any]]:
    """Every service row on every database in `args.db`, in turn."""
    from services.inventory.__main__ import demo_stock

    kinds = [k.strip() for k in args.db.split(",") if k.strip()]
    port = free_port()
    peers = procs.start("saga-peers", [PY, "-m", "tests.bench.servers", "saga-peers", str(port)])
    wait_http(f"http://127.0.0.1:{port}/health/ready", peers)
    tokens = {
        "PORTICO_ISSUER": issuer.issuer,
        "PORTICO_AUDIENCE": issuer.audience,
        "PORTICO_JWKS_URL": jwks_url,
    }
    sku = next(iter(demo_stock()))
    out: list[dict[str, Any]] = []
    for kind in kinds:
        ctx = Context(kind, tokens, sku, f"http://127.0.0.1:{port}")
        for service, is_async, build, names in PLAN:
            if not any(wanted(f"{n} [{kind}]") for n in names):
                continue
            try:
                with database(kind, service, procs.workdir, asyncio=is_async) as url:
                    for target, start in build(url, ctx):
                        if not wanted(target.name):
                            continue
                        if isinstance(start, str):
                            out.append({"name": target.name, "status": f"failed: init: {start}"})
                            continue
                        print(f"  {target.name} ...", file=sys.stderr, flush=True)
                        out.append(measure(procs, args, issuer, script, target, start))
            except Exception as exc:  # a database that cannot be created fails its rows only
                out.append({"name": f"{service} [{kind}]", "status": f"failed: {exc!r}"[:200]})
        if reserve.wanted_kinds([kind], wanted):
            out.extend(_reserve(procs, args, issuer, ctx))
    procs.stop(peers)
    return out
