"""Inventory stock reads speak HTTP caching through the chassis's aiohttp glue: an ETag from
the representation, `public, no-cache` by default, 304 for If-None-Match."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine

from services.inventory.app import create_app
from services.inventory.settings import InventorySettings
from tests.support.tokens import TestIssuer

from .conftest import Api

URL = "/api/v1/inventory/SKU-1"


async def test_etag_304_and_a_fresh_200_after_a_change(api: Api) -> None:
    await api.set_stock("SKU-1", 10)
    first = await api.client.get(URL, headers=api.read)
    tag = first.headers["ETag"]
    assert first.status == 200 and tag.startswith('"')
    assert first.headers["Cache-Control"] == "public, no-cache"
    for held in (tag, f"W/{tag}", f'"old", {tag}', "*"):
        resp = await api.client.get(URL, headers={**api.read, "If-None-Match": held})
        assert resp.status == 304, held
        assert await resp.read() == b"" and resp.headers["ETag"] == tag
    await api.set_stock("SKU-1", 7)  # the level changes: the old tag is stale
    fresh = await api.client.get(URL, headers={**api.read, "If-None-Match": tag})
    assert fresh.status == 200 and (await fresh.json())["on_hand"] == 7
    assert fresh.headers["ETag"] != tag
    # a reservation changes it too (reserved / available are part of the representation)
    await api.reserve("o-1", ("SKU-1", 2))
    after = await api.client.get(URL, headers={**api.read, "If-None-Match": fresh.headers["ETag"]})
    assert after.status == 200 and (await after.json())["available"] == 5


async def test_errors_are_never_304(api: Api) -> None:
    missing = await api.client.get(
        "/api/v1/inventory/NOPE", headers={**api.read, "If-None-Match": "*"}
    )
    assert missing.status == 404 and "ETag" not in missing.headers
    no_token = await api.client.get(URL, headers={"If-None-Match": "*"})
    assert no_token.status == 401


async def test_max_age_setting_and_openapi(
    aiohttp_client: Any, settings: InventorySettings, issuer: TestIssuer, db: Engine
) -> None:
    configured = InventorySettings(
        database_url=settings.database_url, relay=False, cache_max_age=30
    )
    client = await aiohttp_client(create_app(configured, verifier=issuer.async_verifier()))
    api = Api(client, issuer)
    await api.set_stock("SKU-1", 1)
    resp = await client.get(URL, headers=api.read)
    assert resp.headers["Cache-Control"] == "public, max-age=30"
    doc = await (await client.get("/openapi.json")).json()
    get = doc["paths"]["/api/v1/inventory/{sku}"]["get"]
    assert get["responses"]["304"] == {"$ref": "#/components/responses/NotModified"}
    assert {"ETag", "Cache-Control"} <= set(get["responses"]["200"]["headers"])
