"""Inventory test fixtures: the app on a throwaway SQLite file, no relay, a trusted issuer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient
from sqlalchemy import Engine, select

from chassis import create_db_engine, sync_url
from services.inventory.adapters.orm import outbox
from services.inventory.app import create_app
from services.inventory.settings import InventorySettings
from tests.support.migrations import migrated
from tests.support.tokens import TestIssuer

READ = ["inventory:read"]
WRITE = ["inventory:write"]


@pytest.fixture(scope="session")
def issuer() -> TestIssuer:
    return TestIssuer()


@pytest.fixture
def settings(tmp_path: Path) -> InventorySettings:
    return InventorySettings(
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'inventory.db'}",
        relay=False,
        low_stock_threshold=5,
    )


@pytest.fixture
def db(settings: InventorySettings) -> Iterator[Engine]:
    """A blocking engine on the same file, to look at rows (the outbox) directly."""
    migrated("inventory", settings.database_url)  # what `init` does, from a template
    engine = create_db_engine(sync_url(settings.database_url))
    yield engine
    engine.dispose()


class Api:
    def __init__(self, client: TestClient, issuer: TestIssuer) -> None:
        self.client = client
        self.read = issuer.auth(READ)
        self.write = issuer.auth(WRITE)

    async def set_stock(self, sku: str, on_hand: int) -> Any:
        return await self.client.put(
            f"/api/v1/inventory/{sku}", json={"on_hand": on_hand}, headers=self.write
        )

    async def stock(self, sku: str) -> dict[str, Any]:
        resp = await self.client.get(f"/api/v1/inventory/{sku}", headers=self.read)
        assert resp.status == 200, await resp.text()
        return await resp.json()  # type: ignore[no-any-return]

    async def reserve(self, order_id: str, *items: tuple[str, int]) -> Any:
        body = {"order_id": order_id, "items": [{"sku": s, "quantity": q} for s, q in items]}
        return await self.client.post("/api/v1/reservations", json=body, headers=self.write)

    async def commit(self, order_id: str) -> Any:
        return await self.client.post(f"/api/v1/reservations/{order_id}/commit", headers=self.write)

    async def release(self, order_id: str) -> Any:
        return await self.client.post(
            f"/api/v1/reservations/{order_id}/release", headers=self.write
        )


@pytest.fixture
async def api(
    aiohttp_client: Any, settings: InventorySettings, issuer: TestIssuer, db: Engine
) -> Api:
    client = await aiohttp_client(create_app(settings, verifier=issuer.async_verifier()))
    return Api(client, issuer)


def outbox_events(engine: Engine) -> list[tuple[str, dict[str, Any]]]:
    with engine.connect() as conn:
        rows = conn.execute(select(outbox.c.type, outbox.c.data).order_by(outbox.c.seq))
        return [(t, d) for t, d in rows]
