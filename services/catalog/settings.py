"""Catalog settings, read once from `CATALOG_*` variables (token settings: `PORTICO_*`)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from chassis import from_env
from chassis.http_cache import check_max_age
from chassis.retention import RetentionSettings
from chassis.settings import log_level, not_negative, positive, secret, sync_database_url

__all__ = ["CatalogSettings"]


def _redis_url(value: str | None) -> str | None:
    if value is None or value.startswith(("redis://", "rediss://", "unix://")):
        return None
    return "must be a redis://, rediss:// or unix:// URL"


def _release(value: str | None) -> str | None:
    if value is None or re.fullmatch(r"[A-Za-z0-9._-]{1,32}", value):
        return None
    return "must be 1-32 letters, digits, '.', '_' or '-'"


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
    # Product cache (cache-aside, ADR 0021) for reads by id and by sku. With a Redis URL the
    # entries are shared by every catalog process and a write's delete reaches them all;
    # without one, each process keeps an LRU of `cache_entries` (0: no cache at all).
    redis_url: str | None = secret(None, check=_redis_url)
    cache_ttl: float = field(default=60.0, metadata={"check": positive})
    # The per-process LRU is not invalidated by writes in other processes: its TTL bounds
    # how long they may serve the old product.
    cache_lru_ttl: float = field(default=5.0, metadata={"check": positive})
    cache_entries: int = field(default=10_000, metadata={"check": not_negative})
    cache_key_prefix: str = "catalog:"
    # Redis is given this long to connect or to answer (seconds), then the database answers;
    # after 3 failures in a row Redis is left alone for `redis_retry_after` seconds.
    redis_timeout: float = field(default=0.05, metadata={"check": positive})
    redis_retry_after: float = field(default=5.0, metadata={"check": positive})
    # Which release this process is: when set, every answer carries `X-Catalog-Release` with
    # it, so a gateway split's canary answers can be told from the stable side's (ADR 0031).
    release: str | None = field(default=None, metadata={"check": _release})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> CatalogSettings:
        return from_env(cls, "CATALOG_", environ)
