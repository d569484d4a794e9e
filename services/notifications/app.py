"""The notifications service's composition root: settings, engine, event consumer and outbox
relay (threads started and stopped with the app), chassis and routes.

A retention task (`chassis.retention`, started and stopped with the app) purges inbox rows and
published outbox rows older than NOTIFICATIONS_RETENTION_DAYS.

`python -m services.notifications serve` runs it on uvloop; tests pass `consume=False`
settings (no broker) or their own `broker=` settings.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from aiohttp import web
from sqlalchemy import Connection, Engine, select
from sqlalchemy import event as sa_event

from chassis import AsyncTokenVerifier, TokenSettings, configure_logging, create_db_engine, tracing
from chassis.aiohttp import install
from chassis.db import create_async_db_engine, sync_url
from chassis.drain import DRAIN
from chassis.messaging import (
    BrokerSettings,
    Event,
    EventConsumer,
    RelayHandle,
    check_broker,
    start_relay,
)
from chassis.openapi import install_aiohttp
from chassis.retention import Purger, PurgeTarget, retention_ctx

from . import schemas
from .adapters.orm import inbox, notifications, outbox
from .domain import BINDINGS
from .entrypoints import DEPS, Deps, routes
from .service_layer.handlers import handle_event
from .service_layer.live import LiveHub
from .service_layer.unit_of_work import SqlAlchemyUnitOfWork
from .settings import NotificationsSettings

__all__ = ["QUEUE", "create_app"]

log = logging.getLogger("portico.notifications")

QUEUE = "notifications"

_ERRORS = {
    "Unauthorized": "The bearer token is missing or invalid (see WWW-Authenticate)",
    "Forbidden": "The token lacks the required scope",
    "NotFound": "No such notification (or not yours)",
    "UnprocessableContent": "Invalid parameters, named in `errors`",
    "BadRequest": "A resume id this stream never sent",
    "TooManyRequests": "Too many open streams for this consumer (see Retry-After)",
    "Draining": "The instance is draining: reconnect (to another instance)",
}


def create_app(
    settings: NotificationsSettings | None = None,
    *,
    verifier: AsyncTokenVerifier | None = None,
    broker: BrokerSettings | None = None,
) -> web.Application:
    settings = settings or NotificationsSettings.from_env()
    configure_logging("notifications", settings.log_level)
    engine = create_async_db_engine(settings.database_url)
    if settings.consume and broker is None:
        broker = BrokerSettings.from_env()
    app = web.Application(client_max_size=settings.max_body_bytes)

    async def database_ready() -> None:
        """Readiness: the database answers and `init` has created the tables."""
        async with engine.connect() as conn:
            await conn.execute(select(notifications.c.id).limit(1))

    checks: dict[str, Callable[[], Any]] = {"database": database_ready}
    if settings.consume and broker is not None:
        checks["broker"] = lambda: asyncio.to_thread(check_broker, broker)
    metrics = install(
        app,
        "notifications",
        ready_checks=checks,
        verifier=verifier or TokenSettings.from_env().async_verifier(),
    )
    app.router.add_routes(routes)
    install_aiohttp(
        app,
        title="Portico notifications",
        description="What users are told about their orders and payments.",
        security="RFC 9068 access token. Scopes: notifications:read (one's own), "
        "notifications:read:all (staff: list everyone's).",
        schemas={
            "Notification": schemas.NotificationSchema,
            "NotificationPage": schemas.NotificationPageSchema,
        },
        errors=_ERRORS,
    )

    live = LiveHub(settings.stream_limit, settings.stream_heartbeat, settings.stream_poll)
    app[DRAIN].on_begin(live.close_all)  # streams end when the drain begins (ADR 0035)

    async def close_streams(_app: web.Application) -> None:
        live.close_all()  # stopped without a drain (tests): the streams end all the same

    app.on_shutdown.append(close_streams)

    async def lifecycle(_app: web.Application) -> AsyncIterator[None]:
        consumer: EventConsumer | None = None
        relay: RelayHandle | None = None
        live.bind(asyncio.get_running_loop())
        if settings.consume and broker is not None:
            # notification.sent leaves through the outbox the handler writes into
            relay = await asyncio.to_thread(start_relay, settings.database_url, outbox, broker)
            sync_engine = create_db_engine(sync_url(settings.database_url))
            consumer = EventConsumer(
                QUEUE, BINDINGS, _waking(live, sync_engine), sync_engine, inbox, broker
            )
            try:  # bind the queue now, so events published from here on wait for us
                await asyncio.to_thread(consumer.declare)
            except Exception:
                log.warning("broker unreachable at start-up; the consumer keeps trying")
            consumer.start()
        yield
        if consumer is not None:
            await asyncio.to_thread(consumer.stop)
            consumer.engine.dispose()
        if relay is not None:
            await asyncio.to_thread(relay.stop)
        await engine.dispose()

    app.cleanup_ctx.append(lifecycle)
    purger = Purger.from_settings(
        create_db_engine(sync_url(settings.database_url)),
        [PurgeTarget(inbox, inbox.c.processed_at), PurgeTarget(outbox, outbox.c.published_at)],
        settings,
        counted=[notifications, inbox, outbox],
        name="notifications",
    )
    purger.register(metrics.registry, "notifications", live=False)
    app.cleanup_ctx.append(retention_ctx(purger, settings.purge_interval, dispose=True))
    app[DEPS] = Deps(
        engine=engine, uow=lambda: SqlAlchemyUnitOfWork(engine), purger=purger, live=live
    )
    tracing.setup("notifications", app)  # no-op unless PORTICO_TRACING is set
    return app


def _waking(live: LiveHub, engine: Engine) -> Callable[[Event, Connection], None]:
    """The consumer's handler, noting whose notification it stored; once the transaction
    is over (the connection goes back to the pool: after the commit) those owners' streams
    are woken. After a rollback the wake finds nothing new, which is harmless."""
    stored: list[str | None] = []

    def handle(event: Event, conn: Connection) -> None:
        stored.clear()  # a rolled-back attempt's owners were woken already
        note = handle_event(event, conn)  # and its notification.sent, in the same transaction
        if note is not None:
            stored.append(note.owner)

    def checked_in(*_args: Any) -> None:
        if stored:
            owners = stored[:]
            stored.clear()
            live.notify_threadsafe(owners)

    sa_event.listen(engine.pool, "checkin", checked_in)
    return handle
