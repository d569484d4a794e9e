"""The order saga under faults, through the gateway against the real processes.

At least 200 orders from concurrent clients - good cards, declined cards, items that run out
of stock - while payments is killed (SIGKILL, by PID) and restarted once and orders is killed
and restarted once. Afterwards, waiting for conditions with deadlines, never fixed sleeps:
every order is CONFIRMED or REJECTED; per sku, initial stock == current stock + quantity in
confirmed orders and nothing stays reserved; captured money == the confirmed orders' totals,
with no order charged twice and no rejected order charged; exactly one outcome notification
per order. The figures are printed.
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.e2e.conftest import isolated_stack
from tests.support.saga import Api, check_saga_invariants, settle_orders
from tests.support.waiting import wait_until
from tools.stack import Stack

ORDERS = 200
CLIENTS = 8
SCOPES = "orders:read orders:write inventory:read payments:read notifications:read"
# 50 units each in the demo stock
PLENTY = ["BK-0001", "BK-0002", "EL-0001", "KT-0001", "OD-0001", "TY-0001"]
SCARCE = ["EL-0004", "OD-0002"]  # 3 and 2 units: most orders for them are out of stock


def order_plan(n: int) -> list[dict[str, Any]]:
    """A deterministic mix: mostly good cards, every 5th declined, every 7th for a scarce sku."""
    plan = []
    for i in range(n):
        if i % 7 == 3:
            items = [{"sku": SCARCE[i % 2], "quantity": 1}]
        else:
            items = [{"sku": PLENTY[i % len(PLENTY)], "quantity": 1 + i % 2}]
        method = "pm_card_declined" if i % 5 == 1 else "pm_card_ok"
        plan.append({"items": items, "payment_method": method})
    return plan


@pytest.fixture(scope="module")
def fault_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir: Path = tmp_path_factory.mktemp("faults")
    env = {
        "GATEWAY_RATE_LIMIT": "1000000",
        "GATEWAY_RATE_BURST": "1000000",
        # a restarted orders process takes back its own leases at once
        "ORDERS_INSTANCE_ID": f"orders-{uuid.uuid4().hex[:8]}",
        "ORDERS_RETRY_ATTEMPTS": "2",
        "ORDERS_PAYMENTS_TIMEOUT": "4",
        "ORDERS_SAGA_LEASE": "10",
        "ORDERS_SAGA_RETRY_MAX": "2",
        "ORDERS_SAGA_POLL_INTERVAL": "0.5",
        "ORDERS_BREAKER_RECOVERY_TIMEOUT": "1",
    }
    with isolated_stack(workdir, env) as stack:
        yield stack


def test_orders_never_lose_stock_or_money(fault_stack: Stack) -> None:
    creds = fault_stack.credentials()
    gateway = fault_stack.gateway_url
    token = requests.post(
        f"{gateway}/oauth/token",
        data={"grant_type": "client_credentials", "scope": SCOPES},
        auth=(creds["client_id"], creds["client_secret"]),
        timeout=10,
    ).json()["access_token"]
    api = Api(gateway, token)
    skus = PLENTY + SCARCE
    initial = {sku: api.get(f"/api/v1/inventory/{sku}")["on_hand"] for sku in skus}

    accepted: list[str] = []
    lock = threading.Lock()

    def place(body: dict[str, Any]) -> None:
        key = uuid.uuid4().hex
        resp = api.call("POST", "/api/v1/orders", json=body, headers={"Idempotency-Key": key})
        assert resp.status_code == 202, resp.text
        with lock:
            accepted.append(resp.json()["id"])

    restarts = iter([(ORDERS // 3, "payments"), (2 * ORDERS // 3, "orders")])
    pending_restart = next(restarts)
    with ThreadPoolExecutor(CLIENTS) as pool:
        futures = [pool.submit(place, body) for body in order_plan(ORDERS)]
        while pending_restart is not None:
            at, name = pending_restart
            wait_until(
                lambda at=at: len(accepted) >= at,
                120,
                f"{at} accepted orders",
                interval=0.05,
                max_interval=1.0,
            )
            fault_stack.restart(name)
            pending_restart = next(restarts, None)
        for future in futures:
            future.result()
    assert len(set(accepted)) == ORDERS

    orders = settle_orders(api, accepted, 240)
    confirmed = [o for o in orders.values() if o["status"] == "CONFIRMED"]
    rejected = [o for o in orders.values() if o["status"] == "REJECTED"]
    # stock conserved, nothing reserved, money captured == confirmed totals
    figures = check_saga_invariants(api, initial, orders)
    taken = figures.taken
    captured_total, confirmed_total = figures.captured_total, figures.confirmed_total

    # notifications: exactly one outcome per order
    outcomes: Counter[str] = Counter()

    def all_notified() -> bool:
        outcomes.clear()
        for note in api.pages("/api/v1/notifications"):
            if note["event_type"] in ("order.confirmed", "order.rejected"):
                outcomes[note["order_id"]] += 1
        return len(outcomes) >= ORDERS

    wait_until(
        all_notified,
        120,
        "an outcome notification for every order",
        interval=0.05,
        max_interval=1.0,
    )
    assert set(outcomes) == set(accepted)
    assert set(outcomes.values()) == {1}, [o for o, n in outcomes.items() if n != 1]

    reasons = Counter(
        "declined"
        if "declin" in (o.get("reason") or "")
        else "out of stock"
        if "stock" in (o.get("reason") or "")
        else o.get("reason")
        for o in rejected
    )
    print(
        f"\norders={ORDERS} confirmed={len(confirmed)} rejected={len(rejected)} {dict(reasons)}"
        f"\nstock moved={dict(taken)} captured={captured_total} confirmed_total={confirmed_total}"
        f"\noutcome notifications={sum(outcomes.values())} restarts: payments once, orders once"
    )
    assert confirmed
    assert reasons["declined"] and reasons["out of stock"]
