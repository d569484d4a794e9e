"""Checking the order saga from the outside, through the gateway: shared by the fault e2e test
and `make load` (`python -m tests.load`).

`Api` rides out restarts and rate limits (it retries with the same request, so an order's
Idempotency-Key is reused, never a second order). `settle_orders` waits until every order has
an outcome; `check_saga_invariants` then asserts what must hold whatever happened: nothing
stays reserved, per sku initial stock == current stock + quantity in confirmed orders, one
capture per confirmed order for its total and none for a rejected one, captured money ==
confirmed totals. Waiting is polling a condition with a deadline, never a fixed sleep.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import requests

from tests.support.waiting import wait_until

__all__ = [
    "RETRYABLE",
    "Api",
    "SagaFigures",
    "check_saga_invariants",
    "settle_orders",
]

RETRYABLE = {429, 502, 503, 504}
FINAL = ("CONFIRMED", "REJECTED")


class Api:
    """A client of the gateway that rides out the restarts: retries with the same key."""

    @classmethod
    def of_stack(cls, stack: Any, scopes: str) -> Api:
        """With a client_credentials token of the stack's development client (`scopes`)."""
        creds = stack.credentials()
        token = requests.post(
            f"{stack.gateway_url}/oauth/token",
            data={"grant_type": "client_credentials", "scope": scopes},
            auth=(creds["client_id"], creds["client_secret"]),
            timeout=10,
        ).json()["access_token"]
        return cls(stack.gateway_url, token)

    def __init__(self, gateway: str, token: str) -> None:
        self.gateway = gateway
        self.local = threading.local()
        self.headers = {"Authorization": f"Bearer {token}"}

    @property
    def http(self) -> requests.Session:
        if not hasattr(self.local, "session"):
            self.local.session = requests.Session()
        return self.local.session  # type: ignore[no-any-return]

    def call(
        self, method: str, path: str, *, headers: dict[str, str] | None = None, **kw: Any
    ) -> requests.Response:
        merged = {**self.headers, **(headers or {})}

        def attempt() -> requests.Response | None:
            try:
                resp = self.http.request(
                    method, self.gateway + path, headers=merged, timeout=10, **kw
                )
            except requests.ConnectionError:
                return None  # the restart interrupted it: the same request again
            return None if resp.status_code in RETRYABLE else resp

        return wait_until(attempt, 60, f"{method} {path} to stop failing", interval=0.1)

    def get(self, path: str, **params: Any) -> Any:
        resp = self.call("GET", path, params=params)
        assert resp.status_code == 200, (path, resp.status_code, resp.text)
        return resp.json()

    def pages(self, path: str, **params: Any) -> Iterator[dict[str, Any]]:
        cursor = None
        while True:
            page = self.get(path, limit=100, **params, **({"cursor": cursor} if cursor else {}))
            yield from page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return


def settle_orders(api: Api, order_ids: Iterable[str], timeout: float) -> dict[str, dict[str, Any]]:
    """Every order, once it is CONFIRMED or REJECTED (AssertionError past `timeout`)."""
    ids = list(order_ids)
    orders: dict[str, dict[str, Any]] = {}

    def all_settled() -> bool:
        for oid in ids:
            if orders.get(oid, {}).get("status") in FINAL:
                continue
            orders[oid] = api.get(f"/api/v1/orders/{oid}")
        return all(orders[o]["status"] in FINAL for o in ids)

    wait_until(
        all_settled,
        timeout,
        "every order to be CONFIRMED or REJECTED",
        interval=0.05,
        max_interval=1.0,
    )
    return orders


@dataclass(frozen=True)
class SagaFigures:
    confirmed: int
    rejected: int
    taken: dict[str, int]  # units per sku that left the shelf
    captured_total: Decimal
    confirmed_total: Decimal


def check_saga_invariants(
    api: Api,
    initial_stock: dict[str, int],
    orders: dict[str, dict[str, Any]],
    *,
    timeout: float = 120,
) -> SagaFigures:
    """Assert stock is conserved and money captured == confirmed totals, for settled orders.

    `initial_stock`: on-hand units per sku before the orders (every sku the orders use).
    """
    confirmed = [o for o in orders.values() if o["status"] == "CONFIRMED"]
    skus = list(initial_stock)

    # stock: nothing left reserved, and what left the shelf is what confirmed orders took
    stock: dict[str, dict[str, int]] = {}

    def nothing_reserved() -> bool:
        stock.update({sku: api.get(f"/api/v1/inventory/{sku}") for sku in skus})
        return all(s["reserved"] == 0 for s in stock.values())

    wait_until(
        nothing_reserved,
        timeout,
        "every reservation to be committed or released",
        interval=0.05,
        max_interval=1.0,
    )
    taken = Counter[str]()
    for order in confirmed:
        for line in order["items"]:
            taken[line["sku"]] += line["quantity"]
    for sku in skus:
        assert initial_stock[sku] == stock[sku]["on_hand"] + taken[sku], (
            sku,
            initial_stock,
            stock,
            taken,
        )

    # money: one capture per confirmed order, none for rejected ones, amounts equal
    captured_total = Decimal(0)
    for order in orders.values():
        payments = api.get("/api/v1/payments", order_id=order["id"])["items"]
        captures = [p for p in payments if p["status"] == "CAPTURED"]
        if order["status"] == "CONFIRMED":
            assert len(captures) == 1, (order, payments)
            assert Decimal(captures[0]["amount"]) == Decimal(order["total"])
        else:
            assert captures == [], (order, payments)
        captured_total += sum((Decimal(p["amount"]) for p in captures), Decimal(0))
    confirmed_total = sum((Decimal(o["total"]) for o in confirmed), Decimal(0))
    assert captured_total == confirmed_total
    return SagaFigures(
        confirmed=len(confirmed),
        rejected=len(orders) - len(confirmed),
        taken=dict(taken),
        captured_total=captured_total,
        confirmed_total=confirmed_total,
    )
