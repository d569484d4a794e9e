"""The inventory's domain: plain values and rules, no framework or database."""

from .model import (
    Line,
    Reservation,
    ReservationStatus,
    Shortage,
    StockLevel,
    check_quantity,
    check_sku,
    crossed_below,
    merge_lines,
)

__all__ = [
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
