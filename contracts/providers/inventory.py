"""inventory as a provider: stock set and reservations made through inventory's use cases."""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web

from chassis import sqlite_url
from services.inventory.__main__ import init
from services.inventory.app import create_app
from services.inventory.domain import Line
from services.inventory.entrypoints import DEPS
from services.inventory.settings import InventorySettings

from ..harness import serve_aiohttp
from . import Context, Provider


def build_app(ctx: Context) -> web.Application:
    """Inventory's app on a fresh SQLite file, trusting the run's token issuer."""
    url = sqlite_url(ctx.workdir / "inventory.db").replace("sqlite://", "sqlite+aiosqlite://")
    settings = InventorySettings(database_url=url, relay=False)
    init(settings)
    return create_app(settings, verifier=ctx.issuer.async_verifier())


def states(ctx: Context, app: web.Application) -> dict[str, Callable[..., None]]:
    """The provider states, set through the app's use cases (REST and gRPC share them)."""
    service = app[DEPS].service

    def stock(sku: str = "SKU-1", on_hand: int = 10) -> None:
        ctx.loop.run(service.set_stock(sku, int(on_hand)))

    def reserved(order_id: str, sku: str = "SKU-1", quantity: int = 1) -> None:
        ctx.loop.run(service.set_stock(sku, 10))
        ctx.loop.run(service.reserve(order_id, [Line(sku, int(quantity))]))

    return {"stock exists": stock, "stock is reserved for an order": reserved}


def start(ctx: Context) -> Provider:
    app = build_app(ctx)
    backend = ctx.loop.run(serve_aiohttp(app))
    return Provider(
        "inventory", backend, states(ctx, app), close=lambda: ctx.loop.run(backend.stop())
    )
