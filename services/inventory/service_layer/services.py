"""The inventory's use cases, one transaction each (`engine.begin()` is the unit of work).

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

from collections.abc import Iterable

from sqlalchemy.ext.asyncio import AsyncEngine

from chassis.db import reader
from chassis.messaging import OutboxWriter

from ..adapters.events import stock_low
from ..adapters.repository import (
    ConcurrentChange,
    DuplicateReservation,
    InventoryRepository,
    read_reservation,
    read_stock,
)
from ..domain import (
    Line,
    Reservation,
    ReservationStatus,
    Shortage,
    StockLevel,
    crossed_below,
    merge_lines,
)

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
    def __init__(self, engine: AsyncEngine, events: OutboxWriter, low_stock_threshold: int) -> None:
        self.engine = engine
        self.events = events
        self.threshold = low_stock_threshold
        self.read = reader(engine)  # reads: no transaction, one hop (chassis.db)

    async def get_stock(self, sku: str) -> StockLevel:
        level = await self.read(read_stock, sku)
        if level is None:
            raise StockNotFound(sku)
        return level

    async def set_stock(self, sku: str, on_hand: int) -> StockLevel:
        """Admin count: set on_hand (never below what is reserved); may emit `stock.low`."""
        try:
            async with self.engine.begin() as conn:
                result = await InventoryRepository(conn).set_on_hand(sku, on_hand)
                if result is None:
                    raise BelowReserved(sku)
                level, before = result
                low = crossed_below(before, level.available, self.threshold)
                if low:
                    await self.events.write_async(conn, [stock_low(sku, level.available)])
        except ConcurrentChange:
            return await self.set_stock(sku, on_hand)  # the row exists now: update it
        if low:
            self.events.committed()
        return level

    async def get_reservation(self, order_id: str) -> Reservation:
        found = await self.read(read_reservation, order_id)
        if found is None:
            raise ReservationNotFound(order_id)
        return found

    async def reserve(self, order_id: str, items: Iterable[Line]) -> Reservation:
        """Hold every line or none. Idempotent per order id: a retry gets the first answer
        (RESERVED, or OutOfStock with the same shortages), whatever stock did since."""
        lines = merge_lines(items)
        emitted = False
        try:
            async with self.engine.begin() as conn:
                repo = InventoryRepository(conn)
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
                        await self.events.write_async(conn, [stock_low(sku, available)])
                    emitted = bool(low)
                    result = Reservation(order_id, RESERVED, lines)
        except DuplicateReservation:
            result = await self.get_reservation(order_id)
            if result.status is RELEASED:
                raise ReservationConflict(order_id, RELEASED, "reserve") from None
            if result.lines != lines:
                raise ReservationMismatch(order_id) from None
        if emitted:
            self.events.committed()
        if result.status is REJECTED:
            raise OutOfStock(result)
        return result

    async def commit(self, order_id: str) -> Reservation:
        """RESERVED -> COMMITTED: the units leave on_hand. Again on COMMITTED: no-op."""
        async with self.engine.begin() as conn:
            repo = InventoryRepository(conn)
            if await repo.transition(order_id, RESERVED, COMMITTED):
                reservation = await repo.get_reservation(order_id)
                assert reservation is not None
                for line in reservation.lines:
                    await repo.ship(line.sku, line.quantity)
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
            async with self.engine.begin() as conn:
                repo = InventoryRepository(conn)
                if await repo.transition(order_id, RESERVED, RELEASED):
                    reservation = await repo.get_reservation(order_id)
                    assert reservation is not None
                    for line in reservation.lines:
                        await repo.unreserve(line.sku, line.quantity)
                    return reservation
                if await repo.get_reservation(order_id) is None:
                    tombstone = Reservation(order_id, RELEASED, ())
                    await repo.add_reservation(tombstone)
                    return tombstone
        except DuplicateReservation:
            pass  # a reserve got in first: look again below
        current = await self.get_reservation(order_id)
        if current.status is RESERVED:
            return await self.release(order_id)
        if current.status is COMMITTED:
            raise ReservationConflict(order_id, COMMITTED, "release")
        return current
