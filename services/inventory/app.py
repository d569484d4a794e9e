"""The inventory's composition root: settings, engine, use cases, chassis, routes, relay.

`python -m services.inventory serve` runs it on uvloop; tests use
`aiohttp_client(create_app(settings, verifier=...))` with `relay=False`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web
from sqlalchemy import select

from chassis import AsyncTokenVerifier, TokenSettings, configure_logging, tracing
from chassis.aiohttp import install
from chassis.db import create_async_db_engine, create_db_engine, sync_url
from chassis.http_cache import CachePolicy
from chassis.messaging import OutboxWriter, RelayHandle, broker_ready, start_relay
from chassis.openapi import install_aiohttp
from chassis.retention import Purger, PurgeTarget, retention_ctx

from . import schemas
from .adapters.orm import outbox, reservations, stock
from .entrypoints import DEPS, Deps, routes
from .service_layer.services import InventoryService
from .service_layer.unit_of_work import SqlAlchemyUnitOfWork, SqlReadUnitOfWork
from .settings import InventorySettings

__all__ = ["create_app"]

_ERRORS = {
    "Unauthorized": "The bearer token is missing or invalid (see WWW-Authenticate)",
    "Forbidden": "The token lacks the required scope",
    "NotFound": "No such sku or reservation",
    "Conflict": "The reservation's state forbids this, or on_hand is below the reserved units",
    "OutOfStock": "Not enough stock; `skus` and `shortages` name the items short",
    "UnsupportedMediaType": "The body is not application/json",
    "UnprocessableContent": "Invalid fields or parameters, named in `errors`",
}


def create_app(
    settings: InventorySettings | None = None, *, verifier: AsyncTokenVerifier | None = None
) -> web.Application:
    """Build the app; `verifier` is injected by tests, otherwise it follows PORTICO_* settings."""
    settings = settings or InventorySettings.from_env()
    configure_logging("inventory", settings.log_level)
    engine = create_async_db_engine(settings.database_url)
    events = OutboxWriter(outbox)
    app = web.Application(client_max_size=settings.max_body_bytes)

    async def database_ready() -> None:
        """Readiness: the database answers and `init` has created the tables."""
        async with engine.connect() as conn:
            await conn.execute(select(stock.c.sku).limit(1))

    checks: dict[str, Callable[[], Any]] = {"database": database_ready}
    if settings.relay:
        checks["broker"] = lambda: asyncio.to_thread(broker_ready)
    metrics = install(
        app,
        "inventory",
        ready_checks=checks,
        verifier=verifier or _verifier(),
    )
    app.router.add_routes(routes)
    install_aiohttp(
        app,
        title="Portico inventory",
        description="Stock per sku and reservations for orders (reserve, commit, release).",
        security="RFC 9068 access token. Scopes: inventory:read (reads), "
        "inventory:write (stock counts and reservations).",
        schemas={
            "StockLevel": schemas.StockLevelSchema,
            "StockUpdate": schemas.StockUpdateSchema,
            "ReserveRequest": schemas.ReserveRequestSchema,
            "Reservation": schemas.ReservationSchema,
        },
        errors=_ERRORS,
        http_caching=True,
    )

    async def lifecycle(_app: web.Application) -> AsyncIterator[None]:
        relay: RelayHandle | None = None
        if settings.relay:
            relay = await asyncio.to_thread(start_relay, settings.database_url, outbox)
            events.wake = relay.relay.wake
        yield
        if relay is not None:
            events.wake = None
            await asyncio.to_thread(relay.stop)
        await engine.dispose()

    app.cleanup_ctx.append(lifecycle)
    # Published outbox rows older than INVENTORY_RETENTION_DAYS (chassis.retention).
    purger = Purger.from_settings(
        create_db_engine(sync_url(settings.database_url)),
        [PurgeTarget(outbox, outbox.c.published_at)],
        settings,
        counted=[stock, reservations, outbox],
        name="inventory",
    )
    purger.register(metrics.registry, "inventory", live=False)
    app.cleanup_ctx.append(retention_ctx(purger, settings.purge_interval, dispose=True))
    reads = SqlReadUnitOfWork(engine)  # stateless: one for every read
    app[DEPS] = Deps(
        engine=engine,
        service=InventoryService(
            lambda: SqlAlchemyUnitOfWork(engine, events),
            settings.low_stock_threshold,
            reads=lambda: reads,
        ),
        cache_policy=CachePolicy(settings.cache_max_age, public=True),
        purger=purger,
    )
    tracing.setup("inventory", app)  # no-op unless PORTICO_TRACING is set
    return app


def _verifier() -> AsyncTokenVerifier:
    return TokenSettings.from_env().async_verifier()
