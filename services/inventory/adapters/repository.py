"""SQL access to stock and reservations on one AsyncConnection (one transaction per use case).

Overselling is prevented by the database, not by reading first: a reservation is one
conditional `UPDATE ... SET reserved = reserved + q WHERE available >= q`, which PostgreSQL
runs under the row lock (re-checking the condition after a concurrent commit) and SQLite runs
under its single write lock. The CHECK constraints on `stock` back this up.

The reads (`read_stock`, `read_reservation`) are functions of a blocking `Connection`: the
read endpoints run them through `chassis.db.reader` (no transaction, one hop), and a use case
inside its transaction through `AsyncConnection.run_sync`.
"""

from __future__ import annotations

import abc

import orjson
from sqlalchemy import Connection, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from ..domain import Line, Reservation, ReservationStatus, Shortage, StockLevel
from .orm import reservation_lines, reservations, stock

__all__ = [
    "AbstractInventoryRepository",
    "ConcurrentChange",
    "DuplicateReservation",
    "InventoryRepository",
    "read_reservation",
    "read_stock",
]


class DuplicateReservation(Exception):
    """A reservation with this order id exists already."""


class ConcurrentChange(Exception):
    """Another transaction created the same row first; the caller may retry."""


def _level(row: object) -> StockLevel:
    m = row._mapping  # type: ignore[attr-defined]
    return StockLevel(m["sku"], m["on_hand"], m["reserved"])


# Built once: the reads are the hot path, and building a statement is a good part of one.
_STOCK = select(stock.c.sku, stock.c.on_hand, stock.c.reserved).where(
    stock.c.sku == bindparam("sku")
)
_RESERVATION = select(reservations.c.status, reservations.c.shortages).where(
    reservations.c.order_id == bindparam("order_id")
)
_RESERVATION_LINES = (
    select(reservation_lines.c.sku, reservation_lines.c.quantity)
    .where(reservation_lines.c.order_id == bindparam("order_id"))
    .order_by(reservation_lines.c.sku)
)


def read_stock(conn: Connection, sku: str) -> StockLevel | None:
    row = conn.execute(_STOCK, {"sku": sku}).first()
    return None if row is None else StockLevel(row[0], row[1], row[2])


def read_stocks(conn: Connection, skus: list[str]) -> dict[str, StockLevel]:
    rows = conn.execute(select(stock).where(stock.c.sku.in_(skus)))
    return {level.sku: level for level in map(_level, rows)}


def read_reservation(conn: Connection, order_id: str) -> Reservation | None:
    row = conn.execute(_RESERVATION, {"order_id": order_id}).first()
    if row is None:
        return None
    lines = conn.execute(_RESERVATION_LINES, {"order_id": order_id})
    return Reservation(
        order_id=order_id,
        status=ReservationStatus(row[0]),
        lines=tuple(Line(sku, qty) for sku, qty in lines),
        shortages=tuple(Shortage(**s) for s in orjson.loads(row[1])),
    )


class AbstractInventoryRepository(abc.ABC):
    """What the use cases need from storage; SQL here, in memory in `adapters/memory.py`."""

    @abc.abstractmethod
    async def get_stock(self, sku: str) -> StockLevel | None: ...

    @abc.abstractmethod
    async def get_stocks(self, skus: list[str]) -> dict[str, StockLevel]: ...

    @abc.abstractmethod
    async def try_reserve(self, sku: str, quantity: int) -> int | None:
        """Hold `quantity` if available; the available quantity afterwards, or None."""

    @abc.abstractmethod
    async def unreserve(self, sku: str, quantity: int) -> None: ...

    @abc.abstractmethod
    async def ship(self, sku: str, quantity: int) -> None: ...

    @abc.abstractmethod
    async def set_on_hand(self, sku: str, on_hand: int) -> tuple[StockLevel, int] | None:
        """(new level, available before), or None when below what is reserved; raises
        ConcurrentChange when another transaction created the row first."""

    @abc.abstractmethod
    async def add_reservation(self, reservation: Reservation) -> None:
        """Store a new reservation with its lines; raises DuplicateReservation."""

    @abc.abstractmethod
    async def reject(self, order_id: str, shortages: tuple[Shortage, ...]) -> None: ...

    @abc.abstractmethod
    async def transition(
        self, order_id: str, source: ReservationStatus, target: ReservationStatus
    ) -> bool: ...

    @abc.abstractmethod
    async def get_reservation(self, order_id: str) -> Reservation | None: ...


class InventoryRepository(AbstractInventoryRepository):
    def __init__(self, conn: AsyncConnection) -> None:
        self.conn = conn

    # --- stock -------------------------------------------------------------------------------

    async def get_stock(self, sku: str) -> StockLevel | None:
        return await self.conn.run_sync(read_stock, sku)

    async def get_stocks(self, skus: list[str]) -> dict[str, StockLevel]:
        return await self.conn.run_sync(read_stocks, skus)

    async def try_reserve(self, sku: str, quantity: int) -> int | None:
        """Hold `quantity` if available; the available quantity afterwards, or None."""
        c = stock.c
        stmt = (
            update(stock)
            .where(c.sku == sku, c.on_hand - c.reserved >= quantity)
            .values(reserved=c.reserved + quantity)
            .returning(c.on_hand - c.reserved)
        )
        row = (await self.conn.execute(stmt)).first()
        return None if row is None else int(row[0])

    async def unreserve(self, sku: str, quantity: int) -> None:
        c = stock.c
        await self.conn.execute(
            update(stock).where(c.sku == sku).values(reserved=c.reserved - quantity)
        )

    async def ship(self, sku: str, quantity: int) -> None:
        """A committed reservation: the held units leave the shelf."""
        c = stock.c
        await self.conn.execute(
            update(stock)
            .where(c.sku == sku)
            .values(on_hand=c.on_hand - quantity, reserved=c.reserved - quantity)
        )

    async def set_on_hand(self, sku: str, on_hand: int) -> tuple[StockLevel, int] | None:
        """Set the count; (new level, available before) or None when below what is reserved.

        A no-op update first locks the row (PostgreSQL) or takes the write lock (SQLite), so
        the level read is the one the write replaces; no row yet means insert.
        """
        c = stock.c
        locked = (
            await self.conn.execute(
                update(stock)
                .where(c.sku == sku)
                .values(on_hand=c.on_hand)
                .returning(c.on_hand, c.reserved)
            )
        ).first()
        if locked is None:
            try:
                await self.conn.execute(insert(stock).values(sku=sku, on_hand=on_hand, reserved=0))
            except IntegrityError as exc:
                raise ConcurrentChange(sku) from exc
            return StockLevel(sku, on_hand, 0), 0
        before = StockLevel(sku, int(locked[0]), int(locked[1]))
        if before.reserved > on_hand:
            return None
        await self.conn.execute(update(stock).where(c.sku == sku).values(on_hand=on_hand))
        return StockLevel(sku, on_hand, before.reserved), before.available

    # --- reservations ------------------------------------------------------------------------

    async def add_reservation(self, reservation: Reservation) -> None:
        try:
            await self.conn.execute(
                insert(reservations).values(
                    order_id=reservation.order_id,
                    status=reservation.status.value,
                    shortages=_shortages_json(reservation.shortages),
                )
            )
        except IntegrityError as exc:
            raise DuplicateReservation(reservation.order_id) from exc
        if reservation.lines:
            await self.conn.execute(
                insert(reservation_lines),
                [
                    {"order_id": reservation.order_id, "sku": ln.sku, "quantity": ln.quantity}
                    for ln in reservation.lines
                ],
            )

    async def reject(self, order_id: str, shortages: tuple[Shortage, ...]) -> None:
        await self.conn.execute(
            update(reservations)
            .where(reservations.c.order_id == order_id)
            .values(status=ReservationStatus.REJECTED.value, shortages=_shortages_json(shortages))
        )

    async def transition(
        self, order_id: str, source: ReservationStatus, target: ReservationStatus
    ) -> bool:
        """Move source -> target; False when the reservation is not in `source` (or absent)."""
        r = reservations.c
        result = await self.conn.execute(
            update(reservations)
            .where(r.order_id == order_id, r.status == source.value)
            .values(status=target.value)
        )
        return result.rowcount == 1

    async def get_reservation(self, order_id: str) -> Reservation | None:
        return await self.conn.run_sync(read_reservation, order_id)


def _shortages_json(shortages: tuple[Shortage, ...]) -> str:
    return orjson.dumps(
        [{"sku": s.sku, "requested": s.requested, "available": s.available} for s in shortages]
    ).decode()
