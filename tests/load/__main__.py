"""`python -m tests.load [--users N] [--spawn-rate R] [--run-time S] [--out DIR]`: `make load`.

Starts the whole stack on free ports (tools.stack, as `make up` does, with its own broker
exchange and queues, the gateway's rate limit set high), runs the Locust journey
(tests/load/locustfile.py) headless for a bounded time, prints p50/p95/p99 per step, the
failure count and the journey's requests per second and p99, then waits for every order placed
to settle and checks the saga invariants: stock conserved and money captured == confirmed
totals (tests.support.saga). Exit status 0 only with zero failed requests and the invariants
holding. Output: var/load/ (Locust's CSV).
`make test` runs a short one (tests/e2e/test_load.py, ADR 0022).
Needs Redis on 127.0.0.1:6379 (the e2e tests' broker) and locust (requirements-bench.lock).
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from tests.load import SKUS
from tests.support.saga import Api, check_saga_invariants, settle_orders

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "var" / "load"
LOCUSTFILE = Path(__file__).with_name("locustfile.py")
CHECK_SCOPES = "orders:read inventory:read payments:read"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tests.load", description=__doc__)
    parser.add_argument("--users", type=int, default=10, help="concurrent simulated clients")
    parser.add_argument("--spawn-rate", type=float, default=5.0, help="clients started per s")
    parser.add_argument("--run-time", type=int, default=30, help="seconds of load")
    parser.add_argument("--out", type=Path, default=OUT, help="for Locust's CSV (var/load)")
    return parser.parse_args(argv)


def token(gateway: str, creds: dict[str, str], scopes: str) -> str:
    resp = requests.post(
        f"{gateway}/oauth/token",
        data={"grant_type": "client_credentials", "scope": scopes},
        auth=(creds["client_id"], creds["client_secret"]),
        timeout=10,
    )
    resp.raise_for_status()
    return str(resp.json()["access_token"])


def run_locust(args: argparse.Namespace, gateway: str, creds: dict[str, str]) -> Path:
    args.out.mkdir(parents=True, exist_ok=True)
    prefix = args.out / "locust"
    orders_file = args.out / "orders.txt"
    orders_file.write_text("")
    env = {
        **os.environ,
        "LOAD_CLIENT_ID": creds["client_id"],
        "LOAD_CLIENT_SECRET": creds["client_secret"],
        "LOAD_ORDERS_FILE": str(orders_file),
    }
    argv = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless"]
    argv += ["--users", str(args.users), "--spawn-rate", str(args.spawn_rate)]
    argv += ["--run-time", f"{args.run_time}s", "--stop-timeout", "10", "--host", gateway]
    argv += ["--csv", str(prefix), "--only-summary", "--loglevel", "WARNING"]
    print(f"locust: {args.users} clients for {args.run_time}s against {gateway} ...", flush=True)
    # locust's exit status is 1 when any request failed: the table below says which
    subprocess.run(argv, cwd=ROOT, env=env, timeout=args.run_time + 120, check=False)
    return Path(f"{prefix}_stats.csv")


def report(stats: Path) -> int:
    """Print p50/p95/p99 per step and the journey's req/s and p99; the number of failed requests."""
    rows = list(csv.DictReader(stats.open(encoding="utf-8")))
    print(f"\n{'step':<40} {'requests':>9} {'failed':>7} {'p50 ms':>7} {'p95 ms':>7} {'p99 ms':>7}")
    failures = 0
    for row in rows:
        name = "all steps" if row["Name"] == "Aggregated" else f"{row['Type']} {row['Name']}"
        name = name.replace("GET GET ", "GET ").replace("POST POST ", "POST ")
        if row["Name"] != "Aggregated":
            failures += int(row["Failure Count"])
        print(
            f"{name:<40} {row['Request Count']:>9} {row['Failure Count']:>7} "
            f"{row['50%']:>7} {row['95%']:>7} {row['99%']:>7}"
        )
    total = next((r for r in rows if r["Name"] == "Aggregated"), None)
    if total is not None:
        print(
            f"journey: {float(total['Requests/s']):.1f} req/s, p99 {total['99%']} ms "
            f"({total['Request Count']} requests)"
        )
    print(f"failed requests: {failures}")
    return failures


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from tests.e2e.conftest import isolated_stack  # the e2e tests' way to start the stack

    env = {"GATEWAY_RATE_LIMIT": "1000000", "GATEWAY_RATE_BURST": "1000000"}
    with tempfile.TemporaryDirectory(prefix="portico-load-") as tmp:
        print("starting the stack on free ports ...", flush=True)
        started = time.monotonic()
        try:
            stack_cm = isolated_stack(Path(tmp), env)
            stack = stack_cm.__enter__()
        except BaseException as exc:  # pytest's skip (no Redis) is a BaseException too
            print(f"load: the stack did not start: {exc}", file=sys.stderr)
            return 2
        try:
            print(f"stack up in {time.monotonic() - started:.1f}s", flush=True)
            gateway = stack.gateway_url
            creds = stack.credentials()
            api = Api(gateway, token(gateway, creds, CHECK_SCOPES))
            initial = {sku: api.get(f"/api/v1/inventory/{sku}")["on_hand"] for sku in SKUS}
            stats = run_locust(args, gateway, creds)
            if not stats.exists():
                print("load: locust wrote no statistics", file=sys.stderr)
                return 1
            failures = report(stats)
            ids = [i for i in (args.out / "orders.txt").read_text().split() if i]
            print(f"\nchecking the saga: {len(ids)} orders placed, waiting for outcomes ...")
            orders = settle_orders(api, ids, 120)
            figures = check_saga_invariants(api, initial, orders)
            print(
                f"orders={len(ids)} confirmed={figures.confirmed} rejected={figures.rejected}\n"
                f"stock conserved: moved {figures.taken}, nothing reserved\n"
                f"money: captured {figures.captured_total} == confirmed totals "
                f"{figures.confirmed_total}"
            )
        except AssertionError as exc:
            print(f"load: saga invariant broken: {exc}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("\ninterrupted: stopping the stack", file=sys.stderr)
            return 130
        finally:
            stack_cm.__exit__(None, None, None)
    if failures:
        print(f"load: {failures} failed requests (zero required)", file=sys.stderr)
        return 1
    print("load: OK (zero failed requests, saga invariants hold)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
