"""Stock levels and reservations.

A reservation moves RESERVED -> COMMITTED (stock leaves) or RESERVED -> RELEASED (stock comes
back). REJECTED is a reservation that could not be made (out of stock); it is kept so that a
retry with the same order id gets the same answer. RELEASED without lines is a tombstone: a
release that arrived before its reservation, so that a late reserve cannot hold stock forever.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "MAX_QUANTITY",
    "Line",
    "Reservation",
    "ReservationStatus",
    "Shortage",
    "StockLevel",
    "check_quantity",
    "check_sku",
    "crossed_below",
    "merge_lines",
]

MAX_QUANTITY = 1_000_000
_SKU = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_sku(value: str) -> str | None:
    return None if _SKU.fullmatch(value) else "must be 1-64 letters, digits, '.', '_' or '-'"


def check_quantity(value: int) -> str | None:
    return None if 0 < value <= MAX_QUANTITY else f"must be between 1 and {MAX_QUANTITY}"


class ReservationStatus(StrEnum):
    RESERVED = "RESERVED"
    COMMITTED = "COMMITTED"
    RELEASED = "RELEASED"
    REJECTED = "REJECTED"


@dataclass(frozen=True)
class StockLevel:
    sku: str
    on_hand: int
    reserved: int

    @property
    def available(self) -> int:
        return self.on_hand - self.reserved


@dataclass(frozen=True, order=True)
class Line:
    sku: str
    quantity: int


@dataclass(frozen=True)
class Shortage:
    sku: str
    requested: int
    available: int


@dataclass(frozen=True)
class Reservation:
    order_id: str
    status: ReservationStatus
    lines: tuple[Line, ...]
    shortages: tuple[Shortage, ...] = ()


def merge_lines(lines: Iterable[Line]) -> tuple[Line, ...]:
    """One line per sku (quantities summed), sorted by sku: the same request always looks the
    same, and rows are locked in one global order so concurrent reservations cannot deadlock."""
    totals: dict[str, int] = {}
    for line in lines:
        totals[line.sku] = totals.get(line.sku, 0) + line.quantity
    return tuple(Line(sku, qty) for sku, qty in sorted(totals.items()))


def crossed_below(before: int, after: int, threshold: int) -> bool:
    """True once, when available stock falls from >= threshold to below it (no event flood)."""
    return before >= threshold > after
