"""The views service's composition root: settings, engines, the projector with its feed
client and consumer (started and stopped with the app), chassis and routes.

`python -m services.views serve` runs it on uvloop; tests pass `consume=False` settings (no
broker, no feed: they drive the projector themselves) or their own `broker=`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import requests
from aiohttp import web
from sqlalchemy import select

from chassis import AsyncTokenVerifier, TokenSettings, configure_logging, create_db_engine, tracing
from chassis.aiohttp import install
from chassis.db import create_async_db_engine, reader, sync_url
from chassis.messaging import BrokerSettings, check_broker
from chassis.openapi import install_aiohttp
from chassis.retention import Purger, PurgeTarget, retention_ctx
from chassis.service_token import BlockingServiceToken

from . import schemas
from .adapters.consumer import ProjectionConsumer
from .adapters.feed import SCOPE, FeedClient
from .adapters.orm import checkpoint, inbox, order_views
from .domain import BINDINGS
from .entrypoints import DEPS, Deps, routes
from .service_layer.follower import Follower
from .service_layer.lag import LagTracker
from .service_layer.projector import Projector
from .settings import ViewsSettings

__all__ = ["LAG", "LAG_HEADER", "QUEUE", "create_app", "feed_client"]

log = logging.getLogger("portico.views")

QUEUE = "views"
LAG_HEADER = "X-Read-Model-Lag"
LAG = web.AppKey("views.lag", LagTracker)

_ERRORS = {
    "Unauthorized": "The bearer token is missing or invalid (see WWW-Authenticate)",
    "Forbidden": "The token lacks the required scope",
    "NotFound": "No such product in the read model",
    "UnprocessableContent": "Invalid parameters, named in `errors`",
    "Stale": "The read model is further behind than VIEWS_MAX_LAG (see Retry-After)",
}


def feed_client(settings: ViewsSettings) -> FeedClient:
    session = requests.Session()
    token = BlockingServiceToken(
        session,
        settings.token_url,
        SCOPE,
        client_id=settings.client_id,
        client_secret=settings.client_secret,
        client_file=settings.client_file,
        timeout=settings.feed_timeout,
    )
    return FeedClient(settings.orders_url, token, session, settings.feed_timeout)


def create_app(
    settings: ViewsSettings | None = None,
    *,
    verifier: AsyncTokenVerifier | None = None,
    broker: BrokerSettings | None = None,
    lag: LagTracker | None = None,
) -> web.Application:
    settings = settings or ViewsSettings.from_env()
    configure_logging("views", settings.log_level)
    engine = create_async_db_engine(settings.database_url)
    if settings.consume and broker is None:
        broker = BrokerSettings.from_env()
    lag = lag or LagTracker()
    app = web.Application(client_max_size=settings.max_body_bytes)
    app[LAG] = lag

    async def database_ready() -> None:
        """Readiness: the database answers and `migrate` has created the tables."""
        async with engine.connect() as conn:
            await conn.execute(select(order_views.c.order_id).limit(1))

    checks: dict[str, Callable[[], Any]] = {"database": database_ready}
    if settings.consume and broker is not None:
        checks["broker"] = lambda: asyncio.to_thread(check_broker, broker)
    metrics = install(
        app,
        "views",
        ready_checks=checks,
        verifier=verifier or TokenSettings.from_env().async_verifier(),
        ready_info=lambda: {"projection": lag.report()},
    )
    lag.register(metrics.registry)
    app.router.add_routes(routes)
    install_aiohttp(
        app,
        title="Portico views",
        description="The read side: read models kept from orders', notifications' and "
        "catalog's events.",
        security="RFC 9068 access token. Scopes: orders:read (one's own orders), "
        "reports:read (staff: sales), catalog:read (recommendations).",
        schemas={
            "MyOrder": schemas.MyOrderSchema,
            "MyOrderPage": schemas.MyOrderPageSchema,
            "SalesReport": schemas.SalesReportSchema,
            "Recommendations": schemas.RecommendationsSchema,
        },
        errors=_ERRORS,
    )

    async def lag_header(request: web.Request, response: web.StreamResponse) -> None:
        if request.path.startswith("/api/"):
            response.headers[LAG_HEADER] = f"{lag.staleness():.1f}"

    app.on_response_prepare.append(lag_header)

    async def lifecycle(_app: web.Application) -> AsyncIterator[None]:
        follower: Follower | None = None
        sync_engine = None
        if settings.consume and broker is not None:
            sync_engine = create_db_engine(sync_url(settings.database_url))
            projector = Projector(lag, feed_client(settings), page=settings.feed_page)
            with sync_engine.connect() as conn:  # where the stored position stands
                row = conn.execute(select(checkpoint.c.position)).first()
                lag.position = row.position if row else 0
            consumer = ProjectionConsumer(
                QUEUE,
                BINDINGS,
                projector.handle_event,
                sync_engine,
                inbox,
                broker,
                on_idle=lag.idle,
            )
            follower = Follower(projector, consumer, sync_engine, settings.catch_up_retry)
            follower.start()
        yield
        if follower is not None:
            await asyncio.to_thread(follower.stop)
        if sync_engine is not None:
            sync_engine.dispose()
        await engine.dispose()

    app.cleanup_ctx.append(lifecycle)
    purger = Purger.from_settings(
        create_db_engine(sync_url(settings.database_url)),
        [PurgeTarget(inbox, inbox.c.processed_at)],
        settings,
        counted=[order_views, inbox],
        name="views",
    )
    purger.register(metrics.registry, "views", live=False)
    app.cleanup_ctx.append(retention_ctx(purger, settings.purge_interval, dispose=True))
    app[DEPS] = Deps(read=reader(engine), lag=lag, max_lag=settings.max_lag)
    tracing.setup("views", app)  # no-op unless PORTICO_TRACING is set
    return app
