"""Inventory settings, read once from `INVENTORY_*` variables (token settings: `PORTICO_*`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from chassis import from_env
from chassis.http_cache import check_max_age
from chassis.retention import RetentionSettings
from chassis.settings import async_database_url, log_level, not_negative, port, secret
from chassis.settings import port as port_number  # `port` below is the field once defined

__all__ = ["InventorySettings"]


@dataclass(frozen=True)
class InventorySettings(RetentionSettings):
    """Also INVENTORY_RETENTION_DAYS, _PURGE_BATCH, _PURGE_INTERVAL (`chassis.retention`):
    published outbox rows older than the retention are purged."""

    # Relative to the working directory, like every service's default (var/ is git-ignored).
    database_url: str = secret(
        "sqlite+aiosqlite:///var/inventory/inventory.db", check=async_database_url
    )
    host: str = "127.0.0.1"
    port: int = field(default=8103, metadata={"check": port})
    # The gRPC API (ADR 0025) on INVENTORY_HOST, beside the REST API; 0 serves no gRPC.
    grpc_port: int = field(default=50061, metadata={"check": port_number})
    # Seconds calls in flight may take to finish when the server stops.
    grpc_grace: float = field(default=5.0, metadata={"check": not_negative})
    log_level: str = field(default="INFO", metadata={"check": log_level})
    max_body_bytes: int = 64 * 1024
    # `Cache-Control` of stock reads: 0 (default) is `public, no-cache`: caches may keep a
    # level but revalidate it (ETag, a cheap 304) before each use, as stock moves with every
    # order; N > 0 is `public, max-age=N` (levels up to N seconds old).
    cache_max_age: int = field(default=0, metadata={"check": check_max_age})
    # `stock.low` is emitted when a sku's available quantity drops below this.
    low_stock_threshold: int = field(default=5, metadata={"check": not_negative})
    # Relay the outbox to the broker from this process (tests switch it off).
    relay: bool = True

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> InventorySettings:
        return from_env(cls, "INVENTORY_", environ)
