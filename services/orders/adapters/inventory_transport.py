"""The saga's upstreams with inventory's steps over a chosen transport (ADR 0027).

`ORDERS_INVENTORY_TRANSPORT=grpc` (the default) sends reserve, commit and release through
`GrpcInventory`; `rest` leaves them with `HttpUpstreams`. Catalog and payments stay on REST
either way: `WithInventory` delegates, so neither client is copied.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Protocol

from ..domain import (
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
from .upstreams import Upstreams

__all__ = ["TRANSPORTS", "InventorySteps", "WithInventory", "check_transport"]

TRANSPORTS = ("grpc", "rest")


def check_transport(value: str) -> str | None:
    """The settings check of ORDERS_INVENTORY_TRANSPORT."""
    return None if value in TRANSPORTS else f"must be one of {', '.join(TRANSPORTS)}"


class InventorySteps(Protocol):
    """The saga's three inventory steps, in domain outcomes (as `Upstreams` declares them)."""

    async def reserve(
        self, order_id: str, lines: Sequence[Line]
    ) -> Reserved | OutOfStock | Refused | Unavailable: ...

    async def commit(self, order_id: str) -> Committed | Refused | Unavailable: ...

    async def release(self, order_id: str) -> Released | Unavailable: ...


class WithInventory(Upstreams):
    """`base` for catalog and payments, `inventory` for reserve, commit and release."""

    def __init__(self, base: Upstreams, inventory: InventorySteps) -> None:
        self.base = base
        self.inventory = inventory

    async def prices(self, skus: Sequence[str]) -> Priced | UnknownSkus | Unavailable:
        return await self.base.prices(skus)

    async def reserve(
        self, order_id: str, lines: Sequence[Line]
    ) -> Reserved | OutOfStock | Refused | Unavailable:
        return await self.inventory.reserve(order_id, lines)

    async def commit(self, order_id: str) -> Committed | Refused | Unavailable:
        return await self.inventory.commit(order_id)

    async def release(self, order_id: str) -> Released | Unavailable:
        return await self.inventory.release(order_id)

    async def charge(
        self, order_id: str, amount: Decimal, currency: str, payment_method: str, *, owner: str
    ) -> Captured | Declined | Refused | Unavailable:
        return await self.base.charge(order_id, amount, currency, payment_method, owner=owner)

    async def refund(self, order_id: str, payment_id: str) -> Refunded | Unavailable:
        return await self.base.refund(order_id, payment_id)
