"""Many concurrent reservations against little stock: never oversold, each order held once."""

from __future__ import annotations

import asyncio
import random

from .conftest import Api


async def test_concurrent_reserves_never_oversell(api: Api) -> None:
    await api.set_stock("A", 20)
    await api.set_stock("B", 15)
    rnd = random.Random(5)
    orders = {
        f"o{i}": [("A", rnd.randint(1, 3))] + ([("B", rnd.randint(1, 2))] if i % 2 else [])
        for i in range(40)
    }

    async def reserve(order_id: str) -> tuple[str, int]:
        resp = await api.reserve(order_id, *orders[order_id])
        return order_id, resp.status

    results = await asyncio.gather(*(reserve(o) for o in orders))
    statuses = {status for _, status in results}
    assert statuses <= {201, 409}, statuses
    won = [o for o, status in results if status == 201]
    assert 0 < len(won) < len(orders)
    held = {"A": 0, "B": 0}
    for order_id in won:
        for sku, qty in orders[order_id]:
            held[sku] += qty
    for sku, on_hand in (("A", 20), ("B", 15)):
        level = await api.stock(sku)
        assert level["reserved"] == held[sku] <= on_hand
        assert level["available"] >= 0

    # Retries of every order (concurrent again) change nothing.
    again = await asyncio.gather(*(reserve(o) for o in orders))
    assert sorted(again) == sorted(results)
    assert (await api.stock("A"))["reserved"] == held["A"]


async def test_concurrent_same_order_reserves_hold_once(api: Api) -> None:
    await api.set_stock("A", 100)
    results = await asyncio.gather(*(api.reserve("same", ("A", 3)) for _ in range(15)))
    assert {r.status for r in results} == {201}
    assert (await api.stock("A"))["reserved"] == 3
    releases = await asyncio.gather(*(api.release("same") for _ in range(10)))
    assert {r.status for r in releases} == {200}
    assert (await api.stock("A"))["reserved"] == 0
