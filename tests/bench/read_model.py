"""`python -m tests.bench.read_model [--orders N] [--requests R]`: the caller's dashboard as
today's aggregate (`GET /api/v1/me/dashboard`: profile, recent orders and unread notifications
from three services, composed by the gateway) against the read model's
`GET /api/v1/me/orders` (one local query in views), both through the gateway, one connection,
sequential requests, on a stack of its own on free ports. Prints p50/p90 in milliseconds.

The orders are placed through the gateway and their outcomes waited for, so the read model
has them; VIEWS_MAX_LAG is raised for the run (a stack whose orders serve no history feed -
before event-sourced orders - never completes the start-up catch-up)."""

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


def _summary(samples: list[float]) -> str:
    ordered = sorted(samples)
    p90 = ordered[int(len(ordered) * 0.9) - 1]
    return f"p50 {statistics.median(ordered):.2f} ms, p90 {p90:.2f} ms (n={len(ordered)})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.bench.read_model")
    parser.add_argument("--orders", type=int, default=20)
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args(argv)
    env = {"GATEWAY_RATE_LIMIT": "1000000", "GATEWAY_RATE_BURST": "1000000"}
    env["VIEWS_MAX_LAG"] = "1000000"
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
        for i in range(args.orders):
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
        with requests.Session() as session:
            for path in ("/api/v1/me/dashboard", "/api/v1/me/orders?limit=5"):
                _timings(session, gateway + path, headers, 20)  # warm-up
                samples = _timings(session, gateway + path, headers, args.requests)
                print(f"{path}: {_summary(samples)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
