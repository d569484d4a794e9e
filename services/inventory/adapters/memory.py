"""In-memory stock and reservations with the SQL adapter's behaviour, for fast use-case tests.

Reservations keep their lines sorted by sku, as the SQL adapter reads them back; a reserve
never takes more than is available, as the SQL conditional UPDATE guarantees.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..domain import Reservation, ReservationStatus, Shortage, StockLevel
from .repository import AbstractInventoryRepository, DuplicateReservation

__all__ = ["MemoryInventoryRepository", "MemoryStore"]


@dataclass
class MemoryStore:
    """The "database": stock levels and reservations (both immutable values) by key."""

    stock: dict[str, StockLevel] = field(default_factory=dict)
    reservations: dict[str, Reservation] = field(default_factory=dict)

    def copy(self) -> MemoryStore:
        return MemoryStore(dict(self.stock), dict(self.reservations))


class MemoryInventoryRepository(AbstractInventoryRepository):
    def __init__(self, store: MemoryStore) -> None:
        self.store = store

    async def get_stock(self, sku: str) -> StockLevel | None:
        return self.store.stock.get(sku)

    async def get_stocks(self, skus: list[str]) -> dict[str, StockLevel]:
        return {sku: self.store.stock[sku] for sku in skus if sku in self.store.stock}

    def _change(self, sku: str, on_hand: int = 0, reserved: int = 0) -> StockLevel:
        level = self.store.stock[sku]
        level = StockLevel(sku, level.on_hand + on_hand, level.reserved + reserved)
        self.store.stock[sku] = level
        return level

    async def try_reserve(self, sku: str, quantity: int) -> int | None:
        level = self.store.stock.get(sku)
        if level is None or level.available < quantity:
            return None
        return self._change(sku, reserved=quantity).available

    async def unreserve(self, sku: str, quantity: int) -> None:
        if sku in self.store.stock:
            self._change(sku, reserved=-quantity)

    async def ship(self, sku: str, quantity: int) -> None:
        if sku in self.store.stock:
            self._change(sku, on_hand=-quantity, reserved=-quantity)

    async def set_on_hand(self, sku: str, on_hand: int) -> tuple[StockLevel, int] | None:
        before = self.store.stock.get(sku)
        if before is None:
            self.store.stock[sku] = StockLevel(sku, on_hand, 0)
            return self.store.stock[sku], 0
        if before.reserved > on_hand:
            return None
        self.store.stock[sku] = StockLevel(sku, on_hand, before.reserved)
        return self.store.stock[sku], before.available

    async def add_reservation(self, reservation: Reservation) -> None:
        if reservation.order_id in self.store.reservations:
            raise DuplicateReservation(reservation.order_id)
        lines = tuple(sorted(reservation.lines, key=lambda ln: ln.sku))
        self.store.reservations[reservation.order_id] = dataclasses.replace(
            reservation, lines=lines
        )

    async def reject(self, order_id: str, shortages: tuple[Shortage, ...]) -> None:
        found = self.store.reservations.get(order_id)
        if found is not None:
            self.store.reservations[order_id] = dataclasses.replace(
                found, status=ReservationStatus.REJECTED, shortages=shortages
            )

    async def transition(
        self, order_id: str, source: ReservationStatus, target: ReservationStatus
    ) -> bool:
        found = self.store.reservations.get(order_id)
        if found is None or found.status is not source:
            return False
        self.store.reservations[order_id] = dataclasses.replace(found, status=target)
        return True

    async def get_reservation(self, order_id: str) -> Reservation | None:
        return self.store.reservations.get(order_id)
