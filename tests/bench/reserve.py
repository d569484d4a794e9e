"""The reserve row of `make bench` (issue 19 must 4): one reserve call over gRPC against the
same call over REST, on one real inventory process serving both (one database, one run).

The row starts `python -m services.inventory serve` with its HTTP and gRPC ports, sets a
large on_hand on a bench sku over REST (`PUT /api/v1/inventory/{sku}`) and then alternates
rounds of the two transports, each round a load process of its own
(`python -m tests.bench.reserve grpc|rest ...`): C concurrent callers for D seconds, every
call a reserve of 1 unit under a fresh order id. The figures per transport are the medians
over its rounds: calls per second, p99, and the server's CPU (utime+stime of the inventory
process) over the calls completed. Both clients are Python on uvloop (`grpc.aio` with a
plain `portico_proto` stub and the token in metadata; aiohttp), so neither transport is
given a faster load generator; the load process shares the two vCPUs with the server.
At the end the stock is read back: every completed call must have reserved its unit, and
stock must be left (the run never measures an out-of-stock answer).

The load process prints one JSON line: calls, errors, seconds, p50/p99 and its own CPU.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["GRPC_ROW", "REST_ROW", "measure_reserve", "ratio_lines", "wanted_kinds"]

GRPC_ROW = "inventory reserve over gRPC (grpc.aio), x1"
REST_ROW = "inventory reserve over REST (aiohttp), x1"
SKU = "BENCH-RESERVE"
ON_HAND = 1_000_000_000  # StockUpdateSchema's maximum: no run comes near depleting it
SCOPES = ["inventory:read", "inventory:write"]


# --- the load process ---------------------------------------------------------------------


@dataclass
class Load:
    calls: int
    errors: int
    seconds: float
    latencies: list[float]

    def summary(self, cpu: float) -> dict[str, Any]:
        lat = sorted(self.latencies) or [0.0]
        return {
            "calls": self.calls,
            "errors": self.errors,
            "seconds": self.seconds,
            "p50_ms": lat[len(lat) // 2] * 1000,
            "p99_ms": lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000,
            "client_cpu_us_per_call": cpu / max(1, self.calls) * 1e6,
        }


async def _drive(
    call: Callable[[str], Awaitable[bool]], prefix: str, concurrency: int, duration: float
) -> Load:
    """`concurrency` callers, each calling `call(order_id)` back to back until the end."""
    load = Load(0, 0, 0.0, [])
    start = time.perf_counter()
    end = start + duration

    async def caller(n: int) -> None:
        i = 0
        while time.perf_counter() < end:
            i += 1
            t0 = time.perf_counter()
            ok = await call(f"{prefix}-{n}-{i}")
            load.latencies.append(time.perf_counter() - t0)
            load.calls += 1
            load.errors += not ok

    await asyncio.gather(*(caller(n) for n in range(concurrency)))
    load.seconds = time.perf_counter() - start
    return load


async def _grpc(args: argparse.Namespace, token: str) -> Load:
    import grpc

    from portico_proto.inventory.v1 import inventory_pb2 as pb
    from portico_proto.inventory.v1 import inventory_pb2_grpc as pb_grpc

    metadata = (("authorization", f"Bearer {token}"),)
    async with grpc.aio.insecure_channel(args.target) as channel:
        stub = pb_grpc.InventoryStub(channel)
        await asyncio.wait_for(channel.channel_ready(), 10)

        async def call(order_id: str) -> bool:
            request = pb.ReserveRequest(
                order_id=order_id, lines=[pb.Line(sku=args.sku, quantity=1)]
            )
            try:
                reply = await stub.Reserve(request, metadata=metadata, timeout=5)
            except grpc.aio.AioRpcError:
                return False
            return reply.status == pb.Reservation.Status.RESERVED

        return await _drive(call, args.prefix, args.concurrency, args.duration)


async def _rest(args: argparse.Namespace, token: str) -> Load:
    import aiohttp

    url = f"http://{args.target}/api/v1/reservations"
    headers = {"Authorization": f"Bearer {token}"}
    connector = aiohttp.TCPConnector(limit=args.concurrency)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def call(order_id: str) -> bool:
            body = {"order_id": order_id, "items": [{"sku": args.sku, "quantity": 1}]}
            try:
                async with session.post(url, json=body, timeout=aiohttp.ClientTimeout(5)) as r:
                    await r.read()
                    return r.status == 201
            except (aiohttp.ClientError, TimeoutError):
                return False

        return await _drive(call, args.prefix, args.concurrency, args.duration)


def client_main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.reserve")
    parser.add_argument("transport", choices=("grpc", "rest"))
    parser.add_argument("--target", required=True, help="host:port")
    parser.add_argument("--sku", default=SKU)
    parser.add_argument("--prefix", default=uuid.uuid4().hex[:12], help="order ids' prefix")
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--duration", type=float, default=3.0)
    args = parser.parse_args(argv)
    token = os.environ["BENCH_TOKEN"]  # not on the command line (ps would show it)
    import uvloop

    drive = _grpc if args.transport == "grpc" else _rest
    load = uvloop.run(drive(args, token))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps(load.summary(usage.ru_utime + usage.ru_stime)))
    return 0


# --- the row, inside `make bench` ---------------------------------------------------------


def _load(
    transport: str, target: str, token: str, args: argparse.Namespace, duration: float
) -> dict[str, Any]:
    from .harness import PY, ROOT, BenchError

    argv = [PY, "-m", "tests.bench.reserve", transport, "--target", target]
    argv += ["--concurrency", str(args.connections), "--duration", f"{duration:g}"]
    argv += ["--prefix", f"{transport}-{uuid.uuid4().hex[:10]}"]
    done = subprocess.run(
        argv,
        cwd=ROOT,
        env={**os.environ, "BENCH_TOKEN": token},
        capture_output=True,
        text=True,
        timeout=duration + 60,
        check=False,
    )
    if done.returncode != 0:
        raise BenchError(f"{transport} load failed: {done.stderr.strip()[-300:]}")
    doc: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if doc["calls"] == 0:
        raise BenchError(f"no {transport} reserve completed")
    return doc


def _row(name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "name": name,
        "rps": statistics.median(r["calls"] / r["seconds"] for r in runs),
        "p99_ms": statistics.median(r["p99_ms"] for r in runs),
        "cpu_us_per_req": statistics.median(r["cpu_us"] for r in runs),
        "cpu_us_runs": [round(r["cpu_us"]) for r in runs],
        "client_cpu_us_per_call": statistics.median(r["client_cpu_us_per_call"] for r in runs),
        "errors": sum(r["errors"] for r in runs),
    }


def measure_reserve(
    procs: Any, args: argparse.Namespace, issuer: Any, env: dict[str, str], kind: str
) -> list[dict[str, Any]]:
    """Both rows on one inventory process (`env` names its database, already initialised)."""
    from .harness import PY, BenchError, cpu_seconds, free_port, wait_http
    from .services import _request

    port, grpc_port = free_port(), free_port()
    env = {**env, "INVENTORY_PORT": str(port), "INVENTORY_GRPC_PORT": str(grpc_port)}
    proc = procs.start("inventory-reserve", [PY, "-m", "services.inventory", "serve"], env)
    targets = {"grpc": f"127.0.0.1:{grpc_port}", "rest": f"127.0.0.1:{port}"}
    base = f"http://{targets['rest']}"
    token = issuer.token(scopes=SCOPES, sub="bench-user")
    headers = {"Authorization": f"Bearer {token}"}
    names = (f"{GRPC_ROW} [{kind}]", f"{REST_ROW} [{kind}]")
    try:
        wait_http(base + "/health/ready", proc, headers)
        _request("PUT", f"{base}/api/v1/inventory/{SKU}", headers, {"on_hand": ON_HAND})
        for transport in ("grpc", "rest"):  # warm both paths up; not counted
            _load(transport, targets[transport], token, args, 0.5)
        runs: dict[str, list[dict[str, Any]]] = {"grpc": [], "rest": []}
        for _ in range(max(1, args.rounds // 2)):
            for transport in ("grpc", "rest"):
                before = cpu_seconds([proc.pid])
                doc = _load(transport, targets[transport], token, args, args.duration)
                doc["cpu_us"] = (cpu_seconds([proc.pid]) - before) / doc["calls"] * 1e6
                runs[transport].append(doc)
        _, _, level = _request("GET", f"{base}/api/v1/inventory/{SKU}", headers)
        calls = sum(r["calls"] - r["errors"] for rs in runs.values() for r in rs)
        if level["available"] <= 0 or level["reserved"] < calls:
            raise BenchError(f"stock after the run: {level} (completed reserves: {calls})")
        grpc_row, rest_row = _row(names[0], runs["grpc"]), _row(names[1], runs["rest"])
        grpc_row["vs_rest"] = {
            "rps": grpc_row["rps"] / rest_row["rps"],
            "cpu_per_call": grpc_row["cpu_us_per_req"] / rest_row["cpu_us_per_req"],
        }
        return [grpc_row, rest_row]
    except (BenchError, OSError, KeyError, ValueError) as exc:
        why = f"failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        return [{"name": n, "status": why} for n in names]
    finally:
        procs.stop(proc)


def inventory_env(url: str, tokens: dict[str, str]) -> dict[str, str]:
    """Inventory as deployed (INFO, its access line) without a broker, on `url`."""
    return {
        **tokens,
        "INVENTORY_DATABASE_URL": url,
        "INVENTORY_LOG_LEVEL": "INFO",
        "INVENTORY_RELAY": "false",
    }


def wanted_kinds(kinds: list[str], wanted: Callable[[str], bool]) -> list[str]:
    """The databases whose reserve pair --rows asks for (either row runs both)."""
    return [k for k in kinds if wanted(f"{GRPC_ROW} [{k}]") or wanted(f"{REST_ROW} [{k}]")]


def ratio_lines(services: list[dict[str, Any]]) -> list[str]:
    """The report's comparison line per database."""
    lines = []
    for svc in services:
        vs = svc.get("vs_rest")
        if vs:
            kind = svc["name"].rsplit("[", 1)[-1].rstrip("]")
            lines.append(
                f"reserve, gRPC / REST [{kind}]: req/s {vs['rps']:.2f}x, "
                f"server CPU per call {vs['cpu_per_call']:.2f}x"
            )
    return lines


if __name__ == "__main__":
    sys.exit(client_main())
