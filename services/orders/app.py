"""The orders service's composition root: settings, engine, upstream clients, saga driver,
outbox relay, chassis and routes.

`python -m services.orders serve` runs it on uvloop. Tests pass `upstreams=` (a fake of the
other services) and `verifier=`; with `publish_events=False` no broker is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import grpc
from aiohttp import web
from sqlalchemy import select

from chassis import AsyncTokenVerifier, TokenSettings, configure_logging, create_db_engine, tracing
from chassis.aiohttp import install
from chassis.db import create_async_db_engine, sync_url
from chassis.messaging import BrokerSettings, RelayHandle, check_broker, start_relay
from chassis.openapi import install_aiohttp
from chassis.resilience import Retry
from chassis.retention import Purger, PurgeTarget, retention_ctx
from chassis.service_token import ServiceToken

from . import schemas
from .adapters.inventory_grpc import GrpcInventory, channel_options, channel_target
from .adapters.inventory_transport import WithInventory
from .adapters.orm import orders, outbox
from .adapters.upstreams import SERVICE_SCOPE, HttpUpstreams, Transient, Upstreams
from .entrypoints import DEPS, Deps, routes
from .service_layer.saga import SagaDriver, SagaRunner
from .service_layer.unit_of_work import SqlAlchemyUnitOfWork, SqlReadUnitOfWork
from .settings import OrdersSettings

__all__ = ["create_app"]

_ERRORS = {
    "BadRequest": "The Idempotency-Key header is missing (problem type "
    "`https://portico.dev/problems/idempotency-key-missing`), or the body is not JSON",
    "Unauthorized": "The bearer token is missing or invalid (see WWW-Authenticate)",
    "Forbidden": "The token lacks the required scope",
    "NotFound": "No such order (or not yours)",
    "ContentTooLarge": "The body is larger than the service accepts",
    "UnsupportedMediaType": "The body is not application/json",
    "UnprocessableContent": "Invalid fields or query parameters (`as_of`, `after`, `limit`), "
    "unknown skus or a reused Idempotency-Key; named in `errors`",
}


def create_app(
    settings: OrdersSettings | None = None,
    *,
    verifier: AsyncTokenVerifier | None = None,
    upstreams: Upstreams | None = None,
    broker: BrokerSettings | None = None,
) -> web.Application:
    settings = settings or OrdersSettings.from_env()
    configure_logging("orders", settings.log_level)
    engine = create_async_db_engine(settings.database_url)
    if settings.publish_events and broker is None:
        broker = BrokerSettings.from_env()
    app = web.Application(client_max_size=settings.max_body_bytes)

    async def database_ready() -> None:
        """Readiness: the database answers and `init` has created the tables."""
        async with engine.connect() as conn:
            await conn.execute(select(orders.c.id).limit(1))

    checks: dict[str, Callable[[], Any]] = {"database": database_ready}
    if settings.publish_events and broker is not None:
        checks["broker"] = lambda: asyncio.to_thread(check_broker, broker)
    metrics = install(
        app,
        "orders",
        ready_checks=checks,
        verifier=verifier or TokenSettings.from_env().async_verifier(),
    )
    app.router.add_routes(routes)
    install_aiohttp(
        app,
        title="Portico orders",
        description="Orders and the saga that reserves stock, charges and confirms them.",
        security="RFC 9068 access token. Scopes: orders:read (reads of one's own orders), "
        "orders:read:all (staff: everyone's), orders:write (place), orders:events (the event "
        "feed, for read-side services).",
        schemas={
            "Order": schemas.OrderSchema,
            "OrderInput": schemas.OrderInputSchema,
            "OrderPage": schemas.OrderPageSchema,
            "OrderHistory": schemas.OrderHistorySchema,
            "EventFeed": schemas.FeedSchema,
        },
        errors=_ERRORS,
    )

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        started = app[DEPS].started
        session: aiohttp.ClientSession | None = None
        channel: grpc.aio.Channel | None = None
        relay: RelayHandle | None = None
        if upstreams is None:
            session = aiohttp.ClientSession(raise_for_status=False)
            token = ServiceToken(
                session,
                settings.token_url,
                SERVICE_SCOPE,
                client_id=settings.client_id,
                client_secret=settings.client_secret,
                client_file=settings.client_file,
            )
            http = HttpUpstreams(
                session,
                token,
                catalog_url=settings.catalog_url,
                inventory_url=settings.inventory_url,
                payments_url=settings.payments_url,
                catalog_timeout=settings.catalog_timeout,
                inventory_timeout=settings.inventory_timeout,
                payments_timeout=settings.payments_timeout,
                retry=Retry(
                    attempts=settings.retry_attempts,
                    base_delay=settings.retry_base_delay,
                    max_delay=1.0,
                    retry_on=(Transient,),
                ),
                failure_threshold=settings.breaker_failure_threshold,
                recovery_timeout=settings.breaker_recovery_timeout,
                registry=metrics.registry,
            )
            started.upstreams = http
            if settings.inventory_transport == "grpc":
                channel = grpc.aio.insecure_channel(
                    channel_target(settings.inventory_grpc_targets),
                    options=channel_options(
                        settings.retry_attempts,
                        settings.retry_base_delay,
                        settings.inventory_grpc_keepalive,
                        settings.inventory_grpc_keepalive_timeout,
                    ),
                )
                grpc_inventory = GrpcInventory(
                    channel,
                    token,
                    deadline=settings.inventory_grpc_deadline,
                    breaker=http.inventory.breaker,  # one breaker per dependency
                )
                started.upstreams = WithInventory(http, grpc_inventory)
        else:
            started.upstreams = upstreams
        wake: Callable[[], None] = lambda: None  # noqa: E731
        if settings.publish_events and broker is not None:
            relay = await asyncio.to_thread(start_relay, settings.database_url, outbox, broker)
            wake = relay.relay.wake
        runner = SagaRunner(
            app[DEPS].uow,
            started.upstreams,
            instance_id=settings.instance_id,
            lease=settings.saga_lease,
            retry_base=settings.saga_retry_base,
            retry_max=settings.saga_retry_max,
            on_events=wake,
            registry=metrics.registry,
            step_timeout=settings.saga_step_timeout,
        )
        driver = SagaDriver(
            runner, poll_interval=settings.saga_poll_interval, concurrency=settings.saga_concurrency
        )
        started.driver = driver
        driver.start()  # its first sweep resumes what an earlier run left unfinished
        yield
        started.driver = None
        await driver.stop()
        if relay is not None:
            await asyncio.to_thread(relay.stop)  # joins the thread, then disposes its engine
        if channel is not None:
            await channel.close()
        if session is not None:
            await session.close()
        with contextlib.suppress(Exception):
            await engine.dispose()

    app.cleanup_ctx.append(lifecycle)
    # Published outbox rows older than ORDERS_RETENTION_DAYS (chassis.retention). Idempotency
    # keys live on the orders themselves and are never purged.
    purger = Purger.from_settings(
        create_db_engine(sync_url(settings.database_url)),
        [PurgeTarget(outbox, outbox.c.published_at)],
        settings,
        counted=[orders, outbox],
        name="orders",
    )
    purger.register(metrics.registry, "orders", live=False)
    app.cleanup_ctx.append(retention_ctx(purger, settings.purge_interval, dispose=True))
    reads = SqlReadUnitOfWork(engine)  # stateless: one for every read
    app[DEPS] = Deps(
        engine=engine,
        uow=lambda: SqlAlchemyUnitOfWork(engine),
        purger=purger,
        reads=lambda: reads,
    )
    tracing.setup("orders", app)  # no-op unless PORTICO_TRACING is set
    return app
