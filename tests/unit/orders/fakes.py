"""An in-memory catalog + inventory + payments behind the saga's `Upstreams` interface.

It keeps the upstreams' own guarantees (one reservation per order, one charge per key), so a
test can assert that a retried or resumed saga had no second effect.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from decimal import Decimal

from services.orders.adapters.upstreams import Upstreams
from services.orders.domain import (
    Captured,
    Committed,
    Declined,
    Line,
    OutOfStock,
    Priced,
    Refunded,
    Refused,
    Released,
    Reserved,
    Unavailable,
    UnknownSkus,
)

PRICES = {"BK-0001": Decimal("39.90"), "EL-0001": Decimal("29.99"), "KT-0001": Decimal("89.00")}


@dataclass
class FakeUpstreams(Upstreams):
    prices_by_sku: dict[str, Decimal] = field(default_factory=lambda: dict(PRICES))
    stock: dict[str, int] = field(default_factory=lambda: dict.fromkeys(PRICES, 10))
    reservations: dict[str, tuple[str, list[tuple[str, int]]]] = field(default_factory=dict)
    charges: dict[str, tuple[str, Decimal, str]] = field(default_factory=dict)  # key -> payment
    owners: dict[str, str] = field(default_factory=dict)  # key -> whose payment it is
    refunds: set[str] = field(default_factory=set)
    calls: Counter[str] = field(default_factory=Counter)
    down: set[str] = field(default_factory=set)  # "catalog", "inventory", "payments"
    captured_amount_delta: Decimal = Decimal("0")

    def _is_down(self, name: str) -> Unavailable | None:
        return Unavailable(f"{name}: down") if name in self.down else None

    async def prices(self, skus: Sequence[str]) -> Priced | UnknownSkus | Unavailable:
        self.calls["prices"] += 1
        if down := self._is_down("catalog"):
            return down
        unknown = tuple(s for s in skus if s not in self.prices_by_sku)
        if unknown:
            return UnknownSkus(unknown)
        return Priced({s: self.prices_by_sku[s] for s in skus})

    async def reserve(
        self, order_id: str, lines: Sequence[Line]
    ) -> Reserved | OutOfStock | Refused | Unavailable:
        self.calls["reserve"] += 1
        if down := self._is_down("inventory"):
            return down
        if order_id in self.reservations:
            status, _ = self.reservations[order_id]
            return Reserved() if status == "RESERVED" else Refused(f"reservation is {status}")
        short = tuple(ln.sku for ln in lines if self.stock.get(ln.sku, 0) < ln.quantity)
        if short:
            return OutOfStock(short)
        for ln in lines:
            self.stock[ln.sku] -= ln.quantity
        self.reservations[order_id] = ("RESERVED", [(ln.sku, ln.quantity) for ln in lines])
        return Reserved()

    async def commit(self, order_id: str) -> Committed | Refused | Unavailable:
        self.calls["commit"] += 1
        if down := self._is_down("inventory"):
            return down
        status, lines = self.reservations.get(order_id, ("UNKNOWN", []))
        if status not in ("RESERVED", "COMMITTED"):
            return Refused(f"reservation is {status}")
        self.reservations[order_id] = ("COMMITTED", lines)
        return Committed()

    async def release(self, order_id: str) -> Released | Unavailable:
        self.calls["release"] += 1
        if down := self._is_down("inventory"):
            return down
        status, lines = self.reservations.get(order_id, ("UNKNOWN", []))
        if status == "RESERVED":
            for sku, qty in lines:
                self.stock[sku] += qty
            self.reservations[order_id] = ("RELEASED", lines)
        return Released()

    async def charge(
        self, order_id: str, amount: Decimal, currency: str, payment_method: str, *, owner: str
    ) -> Captured | Declined | Refused | Unavailable:
        self.calls["charge"] += 1
        if down := self._is_down("payments"):
            return down
        key = f"charge-{order_id}"
        if payment_method == "pm_card_declined":
            return Declined("card declined")
        if key not in self.charges:
            self.charges[key] = (f"pay-{len(self.charges) + 1}", amount, currency)
            self.owners[key] = owner
        pid, charged, cur = self.charges[key]
        return Captured(pid, charged + self.captured_amount_delta, cur)

    async def refund(self, order_id: str, payment_id: str) -> Refunded | Unavailable:
        self.calls["refund"] += 1
        if down := self._is_down("payments"):
            return down
        self.refunds.add(payment_id)
        return Refunded()

    def captured_total(self) -> Decimal:
        refunded = {k for k, (pid, _, _) in self.charges.items() if pid in self.refunds}
        return sum(
            (amt for k, (_, amt, _) in self.charges.items() if k not in refunded), Decimal("0")
        )
