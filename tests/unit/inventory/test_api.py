"""The inventory HTTP API on SQLite: stock, reservations, idempotency, events, errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine

from services.catalog.service_layer.demo import DEMO_PRODUCTS
from services.inventory.__main__ import demo_stock, init, main
from services.inventory.settings import InventorySettings

from .conftest import Api, outbox_events

PROBLEM = "application/problem+json"


async def test_set_and_get_stock(api: Api) -> None:
    resp = await api.set_stock("SKU-1", 10)
    assert resp.status == 200
    assert await resp.json() == {"sku": "SKU-1", "on_hand": 10, "reserved": 0, "available": 10}
    assert (await api.stock("SKU-1"))["available"] == 10
    missing = await api.client.get("/api/v1/inventory/NOPE", headers=api.read)
    assert missing.status == 404 and missing.content_type == PROBLEM


async def test_reserve_commit_and_release_move_stock(api: Api) -> None:
    await api.set_stock("A", 10)
    await api.set_stock("B", 4)
    resp = await api.reserve("o1", ("A", 3), ("B", 1), ("A", 1))  # duplicate skus merge
    assert resp.status == 201, await resp.text()
    body = await resp.json()
    assert body["status"] == "RESERVED" and body["order_id"] == "o1"
    assert body["items"] == [{"sku": "A", "quantity": 4}, {"sku": "B", "quantity": 1}]
    assert resp.headers["Location"] == "/api/v1/reservations/o1"
    assert await api.stock("A") == {"sku": "A", "on_hand": 10, "reserved": 4, "available": 6}

    committed = await api.commit("o1")
    assert committed.status == 200 and (await committed.json())["status"] == "COMMITTED"
    assert await api.stock("A") == {"sku": "A", "on_hand": 6, "reserved": 0, "available": 6}
    again = await api.commit("o1")  # idempotent
    assert again.status == 200
    assert (await api.stock("A"))["on_hand"] == 6
    assert (await api.release("o1")).status == 409  # the goods are gone

    assert (await api.reserve("o2", ("B", 2))).status == 201
    assert (await api.stock("B"))["available"] == 1
    for _ in range(2):  # idempotent
        released = await api.release("o2")
        assert released.status == 200 and (await released.json())["status"] == "RELEASED"
        assert await api.stock("B") == {"sku": "B", "on_hand": 3, "reserved": 0, "available": 3}
    assert (await api.commit("o2")).status == 409
    assert (await api.commit("unknown")).status == 404
    got = await api.client.get("/api/v1/reservations/o2", headers=api.read)
    assert (await got.json())["status"] == "RELEASED"


async def test_reserve_is_idempotent_per_order_id(api: Api) -> None:
    await api.set_stock("A", 5)
    first = await api.reserve("o1", ("A", 2))
    second = await api.reserve("o1", ("A", 2))
    assert first.status == second.status == 201
    assert await first.json() == await second.json()
    assert (await api.stock("A"))["reserved"] == 2  # held once
    other = await api.reserve("o1", ("A", 3))
    assert other.status == 422 and "items" in (await other.json())["errors"]


async def test_out_of_stock_is_all_or_nothing_and_answers_the_same_again(api: Api) -> None:
    await api.set_stock("A", 5)
    await api.set_stock("B", 1)
    resp = await api.reserve("o1", ("A", 2), ("B", 2), ("ZZ", 1))
    assert resp.status == 409 and resp.content_type == PROBLEM
    problem = await resp.json()
    assert problem["type"].endswith("/out-of-stock")
    assert problem["skus"] == ["B", "ZZ"]
    assert {"sku": "B", "requested": 2, "available": 1} in problem["shortages"]
    assert (await api.stock("A"))["reserved"] == 0  # A was not held either
    await api.set_stock("B", 50)
    retry = await api.reserve("o1", ("A", 2), ("B", 2), ("ZZ", 1))
    assert retry.status == 409  # the first answer, although B is in stock now
    assert (await api.stock("B"))["reserved"] == 0
    assert (await api.release("o1")).status == 200  # nothing held: a no-op


async def test_release_before_reserve_leaves_a_tombstone(api: Api) -> None:
    await api.set_stock("A", 5)
    released = await api.release("late")
    assert released.status == 200 and (await released.json())["status"] == "RELEASED"
    late = await api.reserve("late", ("A", 1))  # the saga gave up on this order already
    assert late.status == 409
    assert (await api.stock("A"))["reserved"] == 0


async def test_stock_low_event_when_available_drops_below_threshold(api: Api, db: Engine) -> None:
    await api.set_stock("A", 7)
    assert outbox_events(db) == []
    assert (await api.reserve("o1", ("A", 2))).status == 201  # 5 left: not below 5
    assert outbox_events(db) == []
    assert (await api.reserve("o2", ("A", 1))).status == 201  # 4 left
    assert outbox_events(db) == [("stock.low", {"sku": "A", "available": 4})]
    assert (await api.reserve("o3", ("A", 1))).status == 201  # still low: no second event
    assert (await api.reserve("o4", ("A", 9))).status == 409  # rejected: rolled back, no event
    assert len(outbox_events(db)) == 1
    await api.set_stock("A", 20)
    await api.set_stock("A", 5)  # a count can cross the edge too
    assert outbox_events(db)[-1] == ("stock.low", {"sku": "A", "available": 1})  # 4 held


async def test_on_hand_cannot_go_below_reserved(api: Api) -> None:
    await api.set_stock("A", 5)
    await api.reserve("o1", ("A", 4))
    resp = await api.set_stock("A", 3)
    assert resp.status == 409
    assert (await api.stock("A"))["on_hand"] == 5


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"order_id": "o", "items": []}, "items"),
        ({"order_id": "o", "items": [{"sku": "A", "quantity": 0}]}, "items"),
        ({"order_id": "o", "items": [{"sku": "A", "quantity": -2}]}, "items"),
        ({"order_id": "o", "items": [{"sku": "A", "quantity": "2"}]}, "items"),
        ({"order_id": "o", "items": [{"sku": "bad sku", "quantity": 1}]}, "items"),
        ({"items": [{"sku": "A", "quantity": 1}]}, "order_id"),
        ({"order_id": "o", "items": [{"sku": "A", "quantity": 1}], "x": 1}, "x"),
    ],
)
async def test_bad_reservations_are_422_naming_the_field(
    api: Api, body: dict[str, Any], field: str
) -> None:
    resp = await api.client.post("/api/v1/reservations", json=body, headers=api.write)
    assert resp.status == 422 and resp.content_type == PROBLEM
    assert field in (await resp.json())["errors"]


async def test_malformed_oversized_unauthorized(api: Api) -> None:
    bad = await api.client.post(
        "/api/v1/reservations",
        data=b"{nope",
        headers={**api.write, "Content-Type": "application/json"},
    )
    assert bad.status == 400 and bad.content_type == PROBLEM
    big = await api.client.post(
        "/api/v1/reservations",
        data=b"[" + b"1," * 40_000 + b"1]",
        headers={**api.write, "Content-Type": "application/json"},
    )
    assert big.status == 413 and big.content_type == PROBLEM
    assert (await api.client.get("/api/v1/inventory/A")).status == 401
    forbidden = await api.client.post(
        "/api/v1/reservations", json={"order_id": "o", "items": []}, headers=api.read
    )
    assert forbidden.status == 403
    negative = await api.set_stock("A", -1)
    assert negative.status == 422


async def test_health_metrics_and_openapi(api: Api) -> None:
    assert (await api.client.get("/health/live")).status == 200
    ready = await api.client.get("/health/ready")
    assert ready.status == 200 and (await ready.json())["checks"] == {"database": "ok"}
    assert "http_requests_total" in await (await api.client.get("/metrics")).text()
    doc = await (await api.client.get("/openapi.json")).json()
    assert doc["openapi"].startswith("3.1")
    assert set(doc["paths"]) == {
        "/api/v1/inventory/{sku}",
        "/api/v1/reservations",
        "/api/v1/reservations/{order_id}",
        "/api/v1/reservations/{order_id}/commit",
        "/api/v1/reservations/{order_id}/release",
    }
    assert set(doc["paths"]["/api/v1/inventory/{sku}"]) >= {"get", "put"}
    assert doc["components"]["responses"]["OutOfStock"]


def test_init_is_idempotent_and_seeds_catalog_demo_skus(tmp_path: Path) -> None:
    settings = InventorySettings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'i.db'}")
    first = init(settings, seed=True)
    assert first["seeded"] == len(demo_stock()) == 20
    assert init(settings, seed=True)["seeded"] == 0
    assert min(demo_stock().values()) < 5 and max(demo_stock().values()) == 50


def test_demo_stock_covers_exactly_the_catalog_demo_skus() -> None:
    """Inventory keeps its own copy of the skus (services never import each other)."""
    assert list(demo_stock()) == [p.sku for p in DEMO_PRODUCTS]


def test_cli_reports_bad_settings(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.setenv("INVENTORY_DATABASE_URL", "mysql://x")
    assert main(["init"]) == 2
    assert "INVENTORY_DATABASE_URL" in capsys.readouterr().err
