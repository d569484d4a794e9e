"""Placing and reading orders. Placing stores a PENDING order (and `order.created`) in one
transaction and leaves the rest to the saga.

Exceptions::

    OrdersError
     +-- OrderNotFound         (404; also for another owner's order: no existence leak)
     +-- UnknownProducts       (422: the catalog has no such sku)
     +-- IdempotencyKeyReused  (422: same key, different request)
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import orjson

from chassis import correlation_id, tracing

from ..adapters.repository import DuplicateKey, StoredOrder
from ..adapters.upstreams import Upstreams
from ..domain import Order, Priced, Status, UnknownSkus
from .unit_of_work import UnitOfWorkFactory

__all__ = [
    "IdempotencyKeyReused",
    "OrderNotFound",
    "OrdersError",
    "PlaceOrder",
    "Placed",
    "UnknownProducts",
    "get_order",
    "list_orders",
    "place_order",
]


class OrdersError(Exception):
    pass


class OrderNotFound(OrdersError):
    pass


class UnknownProducts(OrdersError):
    def __init__(self, skus: tuple[str, ...]) -> None:
        super().__init__(", ".join(skus))
        self.skus = skus


class IdempotencyKeyReused(OrdersError):
    pass


@dataclass(frozen=True)
class PlaceOrder:
    owner: str
    key: str
    items: tuple[tuple[str, int], ...]
    payment_method: str

    def fingerprint(self) -> str:
        """What the Idempotency-Key is bound to: the same body gives the same fingerprint."""
        doc = {"items": [list(i) for i in self.items], "payment_method": self.payment_method}
        return hashlib.sha256(orjson.dumps(doc)).hexdigest()


@dataclass(frozen=True)
class Placed:
    order: Order
    replayed: bool


def _replay(found: StoredOrder, fingerprint: str) -> Placed:
    if found.fingerprint != fingerprint:
        raise IdempotencyKeyReused(found.order.id)
    return Placed(found.order, replayed=True)


async def place_order(
    uow: UnitOfWorkFactory,
    upstreams: Upstreams,
    cmd: PlaceOrder,
    *,
    clock: Callable[[], float] = time.time,
    reads: UnitOfWorkFactory | None = None,
) -> Placed:
    """Store a new PENDING order, or return the one this key created before.

    The catalog is asked for prices now, so an unknown sku is refused before anything is
    stored; when the catalog cannot answer, the order is accepted unpriced and the saga's
    first step prices it later.
    """
    fingerprint = cmd.fingerprint()
    read = reads or uow  # a read unit in the app: the lookup needs no transaction
    async with read() as unit:
        found = await unit.orders.get_by_key(cmd.owner, cmd.key)
    if found is not None:
        return _replay(found, fingerprint)
    priced = await upstreams.prices([sku for sku, _ in cmd.items])
    if isinstance(priced, UnknownSkus):
        raise UnknownProducts(priced.skus)
    order, events = Order.place(
        cmd.owner,
        cmd.items,
        cmd.payment_method,
        prices=priced.prices if isinstance(priced, Priced) else None,
        correlation_id=correlation_id.get(),
    )
    async with uow() as unit:
        try:
            await unit.orders.add(
                order,
                key=cmd.key,
                fingerprint=fingerprint,
                now=clock(),
                traceparent=tracing.current_traceparent(),  # the saga's steps continue it
            )
            cause = f"placed (request {order.correlation_id})" if order.correlation_id else "placed"
            await unit.orders.add_events(order, events, cause=cause)
            await unit.commit()
            return Placed(order, replayed=False)
        except DuplicateKey:
            pass  # a concurrent request with the same key won; answer with its order
    async with read() as unit:
        found = await unit.orders.get_by_key(cmd.owner, cmd.key)
    if found is None:  # pragma: no cover - the unique key was violated, so the row exists
        raise OrdersError("idempotency record vanished")
    return _replay(found, fingerprint)


async def get_order(uow: UnitOfWorkFactory, owner: str | None, order_id: str) -> Order:
    """The order if it is `owner`'s; None reads anyone's (a token with orders:read:all).
    The app passes its read unit (`Deps.reads`): no transaction, one hop."""
    async with uow() as unit:
        found = await unit.orders.get(order_id)
    if found is None or (owner is not None and found.order.owner != owner):
        raise OrderNotFound(order_id)
    return found.order


async def list_orders(
    uow: UnitOfWorkFactory,
    owner: str | None,
    *,
    status: Status | None = None,
    before: tuple[datetime, str] | None = None,
    limit: int = 20,
) -> tuple[list[Order], tuple[datetime, str] | None]:
    """A page of the owner's orders (everyone's for None), newest first, and the sort key to
    continue after."""
    async with uow() as unit:
        rows = await unit.orders.list_for(owner, status=status, before=before, limit=limit + 1)
    page = rows[:limit]
    more = len(rows) > limit
    return page, ((page[-1].created_at, page[-1].id) if more else None)
