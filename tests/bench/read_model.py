"""The caller's dashboard as today's aggregate (`GET /api/v1/me/dashboard`: profile, recent
orders and unread notifications from three services, composed by the gateway) against the read
model's `GET /api/v1/me/orders` (one local query in views), both through the gateway, one
connection, sequential requests in alternating rounds, on a stack of its own on free ports.

`make bench` runs it after the service rows (row name "dashboard vs read model");
`python -m tests.bench.read_model [--orders N] [--requests R]` runs it alone. The orders are
placed through the gateway and their outcomes waited for, so the read model has them."""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import requests

from tests.e2e.conftest import isolated_stack
from tests.support.saga import Api, settle_orders
from tests.support.waiting import wait_until

SCOPES = "orders:read orders:write profile notifications:read"


def _timings(session: requests.Session, url: str, headers: dict[str, str], n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        resp = session.get(url, headers=headers, timeout=10)
        out.append((time.perf_counter() - started) * 1000)
        assert resp.status_code == 200, (url, resp.status_code, resp.text[:200])
    return out


PATHS = {"aggregate": "/api/v1/me/dashboard", "read model": "/api/v1/me/orders?limit=5"}
ROUNDS = 3


def measure(orders: int = 20, requests_per_path: int = 300) -> dict[str, dict[str, float]]:
    """p50 and p90 (ms) of each path of `PATHS`, measured in alternating rounds."""
    env = {"GATEWAY_RATE_LIMIT": "1000000", "GATEWAY_RATE_BURST": "1000000"}
    with (
        tempfile.TemporaryDirectory(prefix="bench-read-model-") as tmp,
        isolated_stack(Path(tmp), env) as stack,
    ):
        creds = stack.credentials()
        gateway = stack.gateway_url
        token = requests.post(
            f"{gateway}/oauth/token",
            data={"grant_type": "client_credentials", "scope": SCOPES},
            auth=(creds["client_id"], creds["client_secret"]),
            timeout=10,
        ).json()["access_token"]
        api = Api(gateway, token)
        ids = []
        for i in range(orders):
            body = {
                "items": [{"sku": "BK-0001", "quantity": 1}],
                "payment_method": "pm_card_ok",
            }
            resp = api.call(
                "POST",
                "/api/v1/orders",
                json=body,
                headers={"Idempotency-Key": f"b{i}-{uuid.uuid4()}"},
            )
            ids.append(resp.json()["id"])
        settle_orders(api, ids, 120)

        def in_read_model() -> bool:
            return len(list(api.pages("/api/v1/me/orders"))) >= len(ids)

        wait_until(in_read_model, 60, "the orders in the read model", interval=0.1)
        headers = {"Authorization": f"Bearer {token}"}
        samples: dict[str, list[float]] = {name: [] for name in PATHS}
        per_round = max(1, requests_per_path // ROUNDS)
        with requests.Session() as session:
            for path in PATHS.values():
                _timings(session, gateway + path, headers, 20)  # warm-up
            for _ in range(ROUNDS):
                for name, path in PATHS.items():
                    samples[name] += _timings(session, gateway + path, headers, per_round)
    return {name: _quantiles(values) for name, values in samples.items()}


def _quantiles(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": statistics.median(ordered),
        "p90_ms": ordered[int(len(ordered) * 0.9) - 1],
        "n": float(len(ordered)),
    }


def lines(found: dict[str, dict[str, float]]) -> list[str]:
    agg, model = found["aggregate"], found["read model"]
    return [
        "",
        "dashboard vs read model (through the gateway, 1 connection):",
        *(
            f"  {name:<10} {PATHS[name]:<28} p50 {q['p50_ms']:6.2f} ms  p90 {q['p90_ms']:6.2f} ms"
            for name, q in found.items()
        ),
        f"  read model / aggregate p50: {model['p50_ms'] / agg['p50_ms']:.2f}x",
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.read_model")
    parser.add_argument("--orders", type=int, default=20)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args(argv)
    print("\n".join(lines(measure(args.orders, args.requests))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
