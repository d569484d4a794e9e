"""The inventory's use cases, one unit of work (transaction) each.

Every write starts with a write statement, so SQLite takes its lock at once (no deferred
read-then-upgrade failures) and PostgreSQL locks the rows it will change.

Exceptions::

    InventoryError
     +-- StockNotFound           (404)
     +-- ReservationNotFound     (404)
     +-- OutOfStock              (409, lists the skus short)
     +-- ReservationConflict     (409: e.g. release after commit, reserve after release)
     +-- ReservationMismatch     (422: same order id, different items)
     +-- BelowReserved           (409: on_hand below the units already reserved)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ..adapters.events import stock_low
from ..adapters.repository import ConcurrentChange, DuplicateReservation
from ..domain import (
    Line,
    Reservation,
    ReservationStatus,
    Shortage,
    StockLevel,
    crossed_below,
    merge_lines,
)
from .unit_of_work import AbstractUnitOfWork

__all__ = [
    "BelowReserved",
    "InventoryError",
    "InventoryService",
    "OutOfStock",
    "ReservationConflict",
    "ReservationMismatch",
    "ReservationNotFound",
    "StockNotFound",
]

RESERVED, COMMITTED = ReservationStatus.RESERVED, ReservationStatus.COMMITTED
RELEASED, REJECTED = ReservationStatus.RELEASED, ReservationStatus.REJECTED


class InventoryError(Exception):
    pass


class StockNotFound(InventoryError):
    pass


class ReservationNotFound(InventoryError):
    pass


class OutOfStock(InventoryError):
    def __init__(self, reservation: Reservation) -> None:
        super().__init__(", ".join(s.sku for s in reservation.shortages))
        self.reservation = reservation


class ReservationConflict(InventoryError):
    def __init__(self, order_id: str, status: ReservationStatus, action: str) -> None:
        super().__init__(f"reservation {order_id} is {status.value}: cannot {action}")
        self.status = status


class ReservationMismatch(InventoryError):
    pass


class BelowReserved(InventoryError):
    pass


class InventoryService:
    """The use cases over a unit-of-work factory (SQL in the app, in memory in unit tests)."""

    def __init__(
        self,
        uow: Callable[[], AbstractUnitOfWork],
        low_stock_threshold: int,
        reads: Callable[[], AbstractUnitOfWork] | None = None,
    ) -> None:
        self.uow = uow
        self.threshold = low_stock_threshold
        # Units for the reads by key: in the app a read unit (no transaction, one hop:
        # chassis.db.reader); `uow` itself when not given (the unit tests' fakes).
        self.reads = reads or uow

    async def get_stock(self, sku: str) -> StockLevel:
        async with self.reads() as uow:
            level = await uow.inventory.get_stock(sku)
        if level is None:
            raise StockNotFound(sku)
        return level

    async def unknown_skus(self, skus: Iterable[str]) -> list[str]:
        """The skus (sorted, once each) with no stock record: what the gRPC Reserve refuses
        with NOT_FOUND before reserving. Stock records are never deleted, so a sku found
        here still exists for the reserve that follows."""
        wanted = sorted(set(skus))
        async with self.reads() as uow:  # one statement outside a transaction (ADR 0026)
            found = await uow.inventory.get_stocks(wanted)
        return [sku for sku in wanted if sku not in found]

    async def set_stock(self, sku: str, on_hand: int) -> StockLevel:
        """Admin count: set on_hand (never below what is reserved); may emit `stock.low`."""
        try:
            async with self.uow() as uow:
                result = await uow.inventory.set_on_hand(sku, on_hand)
                if result is None:
                    raise BelowReserved(sku)
                level, before = result
                if crossed_below(before, level.available, self.threshold):
                    uow.record(stock_low(sku, level.available))
                await uow.commit()
        except ConcurrentChange:
            return await self.set_stock(sku, on_hand)  # the row exists now: update it
        return level

    async def get_reservation(self, order_id: str) -> Reservation:
        async with self.reads() as uow:
            found = await uow.inventory.get_reservation(order_id)
        if found is None:
            raise ReservationNotFound(order_id)
        return found

    async def reserve(self, order_id: str, items: Iterable[Line]) -> Reservation:
        """Hold every line or none. Idempotent per order id: a retry gets the first answer
        (RESERVED, or OutOfStock with the same shortages), whatever stock did since."""
        lines = merge_lines(items)
        try:
            async with self.uow() as uow:
                repo = uow.inventory
                await repo.add_reservation(Reservation(order_id, RESERVED, lines))
                held: list[Line] = []
                short: list[Line] = []
                low: list[tuple[str, int]] = []
                for line in lines:  # sorted by sku: one lock order for everyone
                    after = await repo.try_reserve(line.sku, line.quantity)
                    if after is None:
                        short.append(line)
                        continue
                    held.append(line)
                    if crossed_below(after + line.quantity, after, self.threshold):
                        low.append((line.sku, after))
                if short:
                    for line in held:
                        await repo.unreserve(line.sku, line.quantity)
                    levels = await repo.get_stocks([ln.sku for ln in short])
                    shortages = tuple(
                        Shortage(
                            ln.sku,
                            ln.quantity,
                            levels[ln.sku].available if ln.sku in levels else 0,
                        )
                        for ln in short
                    )
                    await repo.reject(order_id, shortages)
                    result = Reservation(order_id, REJECTED, lines, shortages)
                else:
                    for sku, available in low:
                        uow.record(stock_low(sku, available))
                    result = Reservation(order_id, RESERVED, lines)
                await uow.commit()  # and wakes the relay when it wrote events
        except DuplicateReservation:
            result = await self.get_reservation(order_id)
            if result.status is RELEASED:
                raise ReservationConflict(order_id, RELEASED, "reserve") from None
            if result.lines != lines:
                raise ReservationMismatch(order_id) from None
        if result.status is REJECTED:
            raise OutOfStock(result)
        return result

    async def commit(self, order_id: str) -> Reservation:
        """RESERVED -> COMMITTED: the units leave on_hand. Again on COMMITTED: no-op."""
        async with self.uow() as uow:
            repo = uow.inventory
            if await repo.transition(order_id, RESERVED, COMMITTED):
                reservation = await repo.get_reservation(order_id)
                assert reservation is not None
                for line in reservation.lines:
                    await repo.ship(line.sku, line.quantity)
                await uow.commit()
                return reservation
        current = await self.get_reservation(order_id)
        if current.status is COMMITTED:
            return current
        raise ReservationConflict(order_id, current.status, "commit")

    async def release(self, order_id: str) -> Reservation:
        """RESERVED -> RELEASED: the units become available again.

        Idempotent: RELEASED and REJECTED are no-ops. An unknown order id records a tombstone
        (RELEASED, no lines), so a reserve arriving late cannot hold stock for a dead order.
        COMMITTED cannot be released (409): the goods are gone.
        """
        try:
            async with self.uow() as uow:
                repo = uow.inventory
                if await repo.transition(order_id, RESERVED, RELEASED):
                    reservation = await repo.get_reservation(order_id)
                    assert reservation is not None
                    for line in reservation.lines:
                        await repo.unreserve(line.sku, line.quantity)
                    await uow.commit()
                    return reservation
                if await repo.get_reservation(order_id) is None:
                    tombstone = Reservation(order_id, RELEASED, ())
                    await repo.add_reservation(tombstone)
                    await uow.commit()
                    return tombstone
        except DuplicateReservation:
            pass  # a reserve got in first: look again below
        current = await self.get_reservation(order_id)
        if current.status is RESERVED:
            return await self.release(order_id)
        if current.status is COMMITTED:
            raise ReservationConflict(order_id, COMMITTED, "release")
        return current
