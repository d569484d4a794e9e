"""The catalog's composition root: settings, engine, unit of work, chassis and blueprints.

Outbox relay, as payments does it: every gunicorn worker builds this app after the fork and
starts one chassis relay thread (stopped at exit) that publishes the product events the units
of work wrote; several relays on one table take turns (a lease), and each one is woken right
after a commit that wrote events.

Retention, the same way: each worker runs a purge thread (`chassis.retention`) for published
outbox rows and idempotency keys older than CATALOG_RETENTION_DAYS; on PostgreSQL an advisory
lock lets one worker purge at a time, the others skip the pass.

Product cache (ADR 0021): reads by id and sku go through a cache-aside repository, on Redis
when `CATALOG_REDIS_URL` is set, else on a per-process LRU; the read endpoints get units of
work that read through it (`Deps.read_uow`), the writes units that only invalidate it.
"""

from __future__ import annotations

import atexit

from flask import Flask, Response
from prometheus_client import CollectorRegistry
from sqlalchemy import Engine, select

from chassis import TokenSettings, TokenVerifier, configure_logging, create_db_engine, tracing
from chassis.deps import provide
from chassis.flags import FlagStore
from chassis.flask import install
from chassis.http_cache import CachePolicy
from chassis.messaging import OutboxWriter, RelayHandle, broker_ready, start_relay
from chassis.migrations import require_head
from chassis.openapi import install_flask
from chassis.resilience import CircuitBreaker
from chassis.retention import Purger, PurgeTarget

from . import schemas
from .adapters.cache import CacheStore, LruStore, ProductCache, RedisStore
from .adapters.orm import idempotency_keys, outbox, products
from .entrypoints import Deps, products_bp, products_v2_bp
from .migrations import MIGRATIONS_DIR
from .service_layer.unit_of_work import SqlAlchemyUnitOfWork
from .settings import CatalogSettings

_ERRORS = {
    "BadRequest": "The Idempotency-Key header is missing (problem type "
    "`https://portico.dev/problems/idempotency-key-missing`), or the body is not JSON",
    "Unauthorized": "The bearer token is missing or invalid (see WWW-Authenticate)",
    "Forbidden": "The token lacks the required scope",
    "NotFound": "No such product (on /api/v2 also: v2 is not enabled for this client yet)",
    "Conflict": "The sku is taken, or the product changed concurrently",
    "PreconditionFailed": "If-Match does not match the product's version",
    "UnsupportedMediaType": "The body is not application/json",
    "UnprocessableContent": "Invalid fields or parameters, named in `errors`",
}

__all__ = ["create_app", "purger"]


def purger(engine: Engine, settings: CatalogSettings) -> Purger:
    """What catalog purges: published outbox rows and expired idempotency keys."""
    return Purger.from_settings(
        engine,
        [
            PurgeTarget(outbox, outbox.c.published_at),
            PurgeTarget(idempotency_keys, idempotency_keys.c.created_at),
        ],
        settings,
        counted=[products, outbox, idempotency_keys],
        name="catalog",
    )


def _database_ready(engine: Engine) -> None:
    """Readiness: the database answers and `init` has created the tables."""
    with engine.connect() as conn:
        conn.execute(select(products.c.id).limit(1))


def product_cache(
    settings: CatalogSettings, registry: CollectorRegistry, store: CacheStore | None = None
) -> ProductCache | None:
    """Redis when configured, else a bounded LRU of this process; None with no entries.
    A given `store` (tests) replaces either, with the Redis TTL."""
    ttl = settings.cache_ttl
    if store is not None:
        pass
    elif settings.redis_url:
        breaker = CircuitBreaker(
            "catalog-cache-redis",
            failure_threshold=3,
            recovery_timeout=settings.redis_retry_after,
            registry=registry,
        )
        store = RedisStore(settings.redis_url, timeout=settings.redis_timeout, breaker=breaker)
    elif settings.cache_entries > 0:
        store, ttl = LruStore(settings.cache_entries), settings.cache_lru_ttl
    else:
        return None
    return ProductCache(store, ttl=ttl, prefix=settings.cache_key_prefix, registry=registry)


def create_app(
    settings: CatalogSettings | None = None,
    *,
    verifier: TokenVerifier | None = None,
    cache_store: CacheStore | None = None,
    flags: FlagStore | None = None,
) -> Flask:
    """Build the app; `verifier`, `cache_store` and `flags` are injected by tests, otherwise
    they follow PORTICO_* and CATALOG_* settings (flags: PORTICO_FLAGS_FILE, chassis.flags)."""
    if settings is None:  # the serving path (gunicorn): never serve a stale schema
        settings = CatalogSettings.from_env()
        require_head("catalog", MIGRATIONS_DIR, settings.database_url)
    configure_logging("catalog", settings.log_level)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    engine = create_db_engine(settings.database_url)
    events = OutboxWriter(outbox)
    checks = {"database": lambda: _database_ready(engine)}
    if settings.relay:
        checks["broker"] = broker_ready
    metrics = install(
        app,
        "catalog",
        ready_checks=checks,
        verifier=verifier or TokenSettings.from_env().sync_verifier(),
    )
    cache = product_cache(settings, metrics.registry, cache_store)
    flags = flags if flags is not None else FlagStore.from_env()  # a bad file stops start-up
    flags.register_metrics(metrics.registry)
    app.register_blueprint(products_bp)
    app.register_blueprint(products_v2_bp)  # behind the catalog.v2_products flag
    install_flask(  # built now, from the registered rules: a broken operation doc stops start-up
        app,
        title="Portico catalog",
        description="Products, their prices (EUR) and categories.",
        security="RFC 9068 access token. Scopes: catalog:read (reads), "
        "catalog:write (creates, updates, deletes).",
        # Names the gateway can merge with other services' specs without clashes.
        schemas={
            "Product": schemas.ProductSchema,
            "ProductInput": schemas.ProductInputSchema,
            "ProductPage": schemas.PageSchema,
            "Price": schemas.PriceSchema,  # before ProductV2, which nests it
            "ProductV2": schemas.ProductV2Schema,
            "ProductV2Page": schemas.PageV2Schema,
        },
        errors=_ERRORS,
        http_caching=True,
    )
    relay: RelayHandle | None = None
    if settings.relay:
        relay = start_relay(settings.database_url, outbox)
        events.wake = relay.relay.wake
        atexit.register(relay.stop)
    purge = purger(engine, settings)
    purge.register(metrics.registry, "catalog")
    if settings.purge_interval > 0:
        purge.start(settings.purge_interval)
        atexit.register(purge.stop)
    provide(
        app,
        Deps(
            engine=engine,
            uow=lambda: SqlAlchemyUnitOfWork(engine, events, cache=cache),
            read_uow=lambda: SqlAlchemyUnitOfWork(engine, events, cache=cache, read_through=True),
            cache_policy=CachePolicy(settings.cache_max_age, public=True),
            cache=cache,
            purger=purge,
            relay=relay,
            flags=flags,
        ),
    )
    if settings.release is not None:
        release = settings.release

        @app.after_request
        def _release(resp: Response) -> Response:
            resp.headers["X-Catalog-Release"] = release
            return resp

    tracing.setup("catalog", app)  # no-op unless PORTICO_TRACING is set
    return app
