"""Catalog settings, read once from `CATALOG_*` variables (token settings: `PORTICO_*`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from chassis import from_env
from chassis.http_cache import check_max_age
from chassis.retention import RetentionSettings
from chassis.settings import log_level, secret, sync_database_url

__all__ = ["CatalogSettings"]


@dataclass(frozen=True)
class CatalogSettings(RetentionSettings):
    """Also CATALOG_RETENTION_DAYS, CATALOG_PURGE_BATCH, CATALOG_PURGE_INTERVAL
    (`chassis.retention`): published outbox rows and idempotency keys are purged."""

    # Relative to the working directory, like every service's default (var/ is git-ignored).
    database_url: str = secret("sqlite:///var/catalog/catalog.db", check=sync_database_url)
    log_level: str = field(default="INFO", metadata={"check": log_level})
    # Bigger bodies are refused with 413 before any parsing.
    max_body_bytes: int = 64 * 1024
    # `Cache-Control: public, max-age=N` on product reads (0: `public, no-cache`, revalidate
    # every use). Products are the same for every reader, so caches may share them; a change
    # is seen by clients within N seconds (the gateway cache is purged at once).
    cache_max_age: int = field(default=60, metadata={"check": check_max_age})
    # Relay the outbox (product.created|updated|deleted) to the broker (PORTICO_BROKER_URL)
    # from this process, one relay per gunicorn worker; off only in tests.
    relay: bool = True

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CatalogSettings:
        return from_env(cls, "CATALOG_", environ)
