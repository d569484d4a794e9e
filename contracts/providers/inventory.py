"""inventory as a provider: stock set and reservations made through inventory's use cases."""

from __future__ import annotations

from chassis import sqlite_url
from services.inventory.__main__ import init
from services.inventory.app import create_app
from services.inventory.domain import Line
from services.inventory.entrypoints import DEPS
from services.inventory.settings import InventorySettings

from ..harness import serve_aiohttp
from . import Context, Provider


def start(ctx: Context) -> Provider:
    url = sqlite_url(ctx.workdir / "inventory.db").replace("sqlite://", "sqlite+aiosqlite://")
    settings = InventorySettings(database_url=url, relay=False)
    init(settings)
    app = create_app(settings, verifier=ctx.issuer.async_verifier())
    backend = ctx.loop.run(serve_aiohttp(app))
    service = app[DEPS].service

    def stock(sku: str = "SKU-1", on_hand: int = 10) -> None:
        ctx.loop.run(service.set_stock(sku, int(on_hand)))

    def reserved(order_id: str, sku: str = "SKU-1", quantity: int = 1) -> None:
        ctx.loop.run(service.set_stock(sku, 10))
        ctx.loop.run(service.reserve(order_id, [Line(sku, int(quantity))]))

    states = {"stock exists": stock, "stock is reserved for an order": reserved}
    return Provider("inventory", backend, states, close=lambda: ctx.loop.run(backend.stop()))
