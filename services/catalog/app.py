"""The catalog's composition root: settings, engine, unit of work, chassis and blueprints."""

from __future__ import annotations

from flask import Flask
from sqlalchemy import Engine, select

from chassis import TokenSettings, TokenVerifier, configure_logging, create_db_engine, tracing
from chassis.flask import install
from chassis.http_cache import CachePolicy

from .adapters.orm import products
from .entrypoints import CACHE_POLICY, UOW_FACTORY, install_spec, openapi_bp, products_bp
from .service_layer.unit_of_work import SqlAlchemyUnitOfWork
from .settings import CatalogSettings

__all__ = ["ENGINE", "create_app"]

ENGINE = "catalog.engine"


def _database_ready(engine: Engine) -> None:
    """Readiness: the database answers and `init` has created the tables."""
    with engine.connect() as conn:
        conn.execute(select(products.c.id).limit(1))


def create_app(
    settings: CatalogSettings | None = None, *, verifier: TokenVerifier | None = None
) -> Flask:
    """Build the app; `verifier` is injected by tests, otherwise it follows PORTICO_* settings."""
    settings = settings or CatalogSettings.from_env()
    configure_logging("catalog", settings.log_level)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    engine = create_db_engine(settings.database_url)
    app.extensions[ENGINE] = engine
    app.extensions[UOW_FACTORY] = lambda: SqlAlchemyUnitOfWork(engine)
    app.extensions[CACHE_POLICY] = CachePolicy(settings.cache_max_age, public=True)
    install(
        app,
        "catalog",
        ready_checks={"database": lambda: _database_ready(engine)},
        verifier=verifier or TokenSettings.from_env().sync_verifier(),
    )
    app.register_blueprint(products_bp)
    app.register_blueprint(openapi_bp)
    install_spec(app)
    tracing.setup("catalog", app)  # no-op unless PORTICO_TRACING is set
    return app
