"""Inventory domain rules: line merging (lock order) and the low-stock edge."""

from __future__ import annotations

from services.inventory.domain import (
    Line,
    StockLevel,
    check_quantity,
    check_sku,
    crossed_below,
    merge_lines,
)


def test_merge_lines_sums_duplicates_and_sorts_by_sku() -> None:
    merged = merge_lines([Line("B", 1), Line("A", 2), Line("B", 3)])
    assert merged == (Line("A", 2), Line("B", 4))
    assert merge_lines([Line("B", 4), Line("A", 2)]) == merged  # same request, same shape


def test_crossed_below_fires_once_on_the_edge() -> None:
    assert crossed_below(5, 4, 5)
    assert not crossed_below(4, 3, 5)  # already below: no flood of events
    assert not crossed_below(9, 5, 5)
    assert crossed_below(10, 0, 1)


def test_available_and_checks() -> None:
    assert StockLevel("A", 10, 3).available == 7
    assert check_sku("BK-0001") is None
    assert check_sku("") and check_sku("a b") and check_sku("x" * 65)
    assert check_quantity(1) is None
    assert check_quantity(0) and check_quantity(-1)
