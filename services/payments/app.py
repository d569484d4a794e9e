"""The payments app factory: `gunicorn 'services.payments.app:create_app()'`.

Outbox relay: every gunicorn worker builds this app after the fork and starts one relay
thread (stopped at exit). Several relays on one table are safe: the chassis relay takes
turns through a lease on the claimed rows, and consumers deduplicate by event id. This keeps
the plain gunicorn command working without a config file; the relay in a worker also gets
`wake()` right after each capture/refund commit.
"""

from __future__ import annotations

import atexit

from flask import Flask
from sqlalchemy import Engine, select

from chassis import TokenSettings, TokenVerifier, configure_logging, create_db_engine, tracing
from chassis.deps import provide
from chassis.flask import install
from chassis.messaging import OutboxWriter, RelayHandle, broker_ready, start_relay
from chassis.migrations import require_head
from chassis.openapi import install_flask
from chassis.retention import Purger, PurgeTarget

from . import schemas
from .adapters.orm import outbox, payments
from .adapters.provider import SimulatedProvider
from .entrypoints import Deps, payments_bp
from .migrations import MIGRATIONS_DIR
from .service_layer.services import PaymentService
from .service_layer.unit_of_work import SqlAlchemyUnitOfWork, SqlReadUnitOfWork
from .settings import PaymentsSettings

__all__ = ["create_app"]

_ERRORS = {
    "BadRequest": "The Idempotency-Key header is missing (problem type "
    "`https://portico.dev/problems/idempotency-key-missing`), or the body is not JSON",
    "Unauthorized": "The bearer token is missing or invalid (see WWW-Authenticate)",
    "Forbidden": "The token lacks the required scope",
    "NotFound": "No such payment, or another user's (not revealed)",
    "PaymentDeclined": "The payment method was declined (`decline_code`)",
    "Conflict": "A request with this Idempotency-Key is in flight, or the payment's state "
    "forbids the refund",
    "UnsupportedMediaType": "The body is not application/json",
    "UnprocessableContent": "Invalid fields, headers or parameters, named in `errors`",
    "ProviderUnavailable": "The provider is down; nothing was charged; retry with the same key",
}


def _database_ready(engine: Engine) -> None:
    """Readiness: the database answers and `init` has created the tables."""
    with engine.connect() as conn:
        conn.execute(select(payments.c.id).limit(1))


def create_app(
    settings: PaymentsSettings | None = None, *, verifier: TokenVerifier | None = None
) -> Flask:
    """Build the app; `verifier` is injected by tests, otherwise it follows PORTICO_* settings."""
    if settings is None:  # the serving path (gunicorn): never serve a stale schema
        settings = PaymentsSettings.from_env()
        require_head("payments", MIGRATIONS_DIR, settings.database_url)
    configure_logging("payments", settings.log_level)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    engine = create_db_engine(settings.database_url)
    events = OutboxWriter(outbox)
    checks = {"database": lambda: _database_ready(engine)}
    if settings.relay:
        checks["broker"] = broker_ready
    metrics = install(
        app,
        "payments",
        ready_checks=checks,
        verifier=verifier or TokenSettings.from_env().sync_verifier(),
    )
    app.register_blueprint(payments_bp)
    install_flask(
        app,
        title="Portico payments",
        description="Charges and refunds (EUR) against a simulated provider; test "
        "payment-method tokens pm_card_ok, pm_card_declined, pm_card_error, pm_card_slow.",
        security="RFC 9068 access token. Scopes: payments:read (reads of one's own "
        "payments), payments:read:all (staff: everyone's), payments:write (charges, refunds).",
        schemas={
            "Payment": schemas.PaymentSchema,
            "ChargeRequest": schemas.ChargeRequestSchema,
            "PaymentList": schemas.PaymentListSchema,
        },
        errors=_ERRORS,
    )
    relay: RelayHandle | None = None
    if settings.relay:
        relay = start_relay(settings.database_url, outbox)
        events.wake = relay.relay.wake
        atexit.register(relay.stop)
    # Published outbox rows older than PAYMENTS_RETENTION_DAYS, one purge thread per worker
    # (an advisory lock on PostgreSQL lets one purge at a time). Idempotency keys live on the
    # payments themselves and are never purged.
    purger = Purger.from_settings(
        engine,
        [PurgeTarget(outbox, outbox.c.published_at)],
        settings,
        counted=[payments, outbox],
        name="payments",
    )
    purger.register(metrics.registry, "payments")
    if settings.purge_interval > 0:
        purger.start(settings.purge_interval)
        atexit.register(purger.stop)
    service = PaymentService(
        lambda: SqlAlchemyUnitOfWork(engine, events),
        SimulatedProvider(settings.slow_delay),
        pending_lease=settings.pending_lease,
        reads=lambda: SqlReadUnitOfWork(engine),
    )
    provide(app, Deps(engine=engine, service=service, purger=purger, relay=relay))
    tracing.setup("payments", app)  # no-op unless PORTICO_TRACING is set
    return app
