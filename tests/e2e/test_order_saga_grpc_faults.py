"""The order saga over gRPC while inventory instances die (issue 19, must 3; ADR 0027).

Two inventory processes share one throwaway PostgreSQL database, each with its own gRPC port;
orders calls them over gRPC (`ORDERS_INVENTORY_TRANSPORT=grpc`, both as targets, round_robin
over the healthy ones). A bounded number of orders from concurrent clients - good cards,
declined cards, scarce skus - while the first instance is killed (SIGKILL, by PID) and
restarted, then the second. Afterwards, waiting for conditions with deadlines: every order is
CONFIRMED or REJECTED for a real reason (declined, out of stock); per sku, initial stock ==
current stock + quantity in confirmed orders and nothing stays reserved; money captured ==
confirmed totals. No inventory call of the saga ran into its deadline: a call cut off by the
kill failed at once (UNAVAILABLE) and went to the other instance, so orders' log records no
DEADLINE_EXCEEDED step. The figures are printed.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import isolated_stack
from tests.e2e.test_order_saga_faults import PLENTY, SCARCE, SCOPES, order_plan
from tests.support.external import throwaway_postgres
from tests.support.saga import Api, check_saga_invariants, settle_orders
from tests.support.waiting import wait_until
from tools.stack import Stack, free_port

ORDERS = 48
CLIENTS = 6
INVENTORY_STEPS = ("reserve", "commit", "release")


@pytest.fixture(scope="module")
def grpc_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp("grpc-faults")
    first, second = free_port(), free_port()
    with throwaway_postgres("grpcfaults") as url:
        env = {
            "GATEWAY_RATE_LIMIT": "1000000",
            "GATEWAY_RATE_BURST": "1000000",
            "INVENTORY_DATABASE_URL": url.replace("postgresql+psycopg://", "postgresql+asyncpg://"),
            "INVENTORY_GRPC_PORT": str(first),
            "ORDERS_INVENTORY_TRANSPORT": "grpc",
            "ORDERS_INVENTORY_GRPC_TARGETS": f"127.0.0.1:{first},127.0.0.1:{second}",
            "ORDERS_INVENTORY_GRPC_DEADLINE": "3",
            "ORDERS_RETRY_ATTEMPTS": "3",
            "ORDERS_SAGA_LEASE": "20",
            "ORDERS_SAGA_RETRY_MAX": "2",
            "ORDERS_SAGA_POLL_INTERVAL": "0.5",
            "ORDERS_BREAKER_RECOVERY_TIMEOUT": "1",
        }
        with isolated_stack(workdir, env) as stack:
            stack.add_instance(
                "inventory", free_port(), "inventory-2", {"INVENTORY_GRPC_PORT": str(second)}
            )
            yield stack


def _records(stack: Stack, name: str) -> list[dict[str, Any]]:
    """A process's JSON log records (one per line; anything else is skipped)."""
    records = []
    for line in (stack.var / "log" / f"{name}.log").read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def test_orders_settle_while_inventory_instances_are_killed(grpc_stack: Stack) -> None:
    api = Api.of_stack(grpc_stack, SCOPES)
    skus = PLENTY + SCARCE
    initial = {sku: api.get(f"/api/v1/inventory/{sku}")["on_hand"] for sku in skus}

    accepted: list[str] = []
    lock = threading.Lock()

    def place(body: dict[str, Any]) -> None:
        resp = api.call(
            "POST", "/api/v1/orders", json=body, headers={"Idempotency-Key": uuid.uuid4().hex}
        )
        assert resp.status_code == 202, resp.text
        with lock:
            accepted.append(resp.json()["id"])

    kills = iter([(ORDERS // 4, "inventory"), (ORDERS // 2, "inventory-2")])
    pending = next(kills, None)
    with ThreadPoolExecutor(CLIENTS) as pool:
        futures = [pool.submit(place, body) for body in order_plan(ORDERS)]
        while pending is not None:
            at, name = pending
            wait_until(
                lambda at=at: len(accepted) >= at,
                120,
                f"{at} accepted orders",
                interval=0.05,
                max_interval=1.0,
            )
            grpc_stack.restart(name)  # SIGKILL by PID, start again, wait until ready
            pending = next(kills, None)
        for future in futures:
            future.result()
    assert len(set(accepted)) == ORDERS

    orders = settle_orders(api, accepted, 240)  # every order CONFIRMED or REJECTED
    figures = check_saga_invariants(api, initial, orders)  # stock and money conserved
    rejected = [o for o in orders.values() if o["status"] == "REJECTED"]
    reasons = Counter(
        "declined"
        if "declin" in (o.get("reason") or "")
        else "out of stock"
        if "stock" in (o.get("reason") or "")
        else o.get("reason")
        for o in rejected
    )
    assert set(reasons) <= {"declined", "out of stock"}, reasons  # real reasons only

    # Inventory steps that had to wait (the kills): each failed fast, none hit its deadline.
    waits = [
        r
        for r in _records(grpc_stack, "orders")
        if r.get("msg") == "saga waits" and r.get("step") in INVENTORY_STEPS
    ]
    errors = Counter(str(r.get("error", ""))[:60] for r in waits)
    assert not [e for e in errors if "DEADLINE_EXCEEDED" in e], errors
    # ... and the saga went to inventory over gRPC: REST saw the stock reads, no reservation
    paths = [
        str(r.get("path"))
        for name in ("inventory", "inventory-2")
        for r in _records(grpc_stack, name)
        if r.get("msg") == "request"
    ]
    assert any(p.startswith("/api/v1/inventory/") for p in paths)
    assert not [p for p in paths if p.startswith("/api/v1/reservations")]

    confirmed = len(orders) - len(rejected)
    print(
        f"\norders={ORDERS} confirmed={confirmed} rejected={len(rejected)} {dict(reasons)}"
        f"\nstock moved={dict(figures.taken)} captured={figures.captured_total}"
        f"\ninventory steps that waited: {sum(errors.values())} {dict(errors)}"
        f"\nkilled and restarted: inventory, then inventory-2"
    )
    assert confirmed and reasons["declined"]
