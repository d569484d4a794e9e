"""Issue 15 item 8 on inventory (aiohttp): bounded integers, whole-string patterns, JSON that
cannot be read is a 400 problem."""

from __future__ import annotations

from typing import Any

import pytest

from .conftest import Api

ARABIC_TEN = "\u0661\u0660"


async def refused(resp: Any, status: int, field: str | None = None) -> None:
    assert resp.status == status, await resp.text()
    assert resp.content_type == "application/problem+json"
    if field is not None:
        assert field in (await resp.json())["errors"]


@pytest.mark.parametrize("on_hand", [10**30, 2**64, -(2**64), 1e300, "10", ARABIC_TEN, True])
async def test_stock_out_of_bounds_is_422(api: Api, on_hand: Any) -> None:
    await refused(await api.set_stock("BK-0001", on_hand), 422, "on_hand")


async def test_sku_in_the_path_must_match_in_full(api: Api) -> None:
    # 200 on main: `...$` matched before the newline (%0A)
    await refused(await api.set_stock("BK-0001%0A", 5), 422, "sku")


@pytest.mark.parametrize(
    ("order_id", "sku", "quantity", "field"),
    [
        ("o1\n", "BK-0001", 1, "order_id"),
        ("o1", "BK-0001\n", 1, "items"),
        ("o1", "BK-0001", 10**30, "items"),
        ("o1", "BK-0001", 2**64, "items"),
    ],
)
async def test_reservation_out_of_bounds_is_422(
    api: Api, order_id: str, sku: str, quantity: Any, field: str
) -> None:
    await refused(await api.reserve(order_id, (sku, quantity)), 422, field)


async def test_order_id_in_the_path_must_match_in_full(api: Api) -> None:
    await refused(await api.commit("o1%0A"), 422, "order_id")


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 10_000 + b"]" * 10_000,
        b'{"on_hand": ' + b"[" * 10_000 + b"]" * 10_000 + b"}",
        b'{"on_hand": 1, "x": "\\ud800"}',
    ],
)
async def test_unreadable_json_is_400(api: Api, raw: bytes) -> None:
    resp = await api.client.put(
        "/api/v1/inventory/BK-0001",
        data=raw,
        headers={**api.write, "Content-Type": "application/json"},
    )
    await refused(resp, 400)
