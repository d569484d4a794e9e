"""Inventory settings, read once from `INVENTORY_*` variables (token settings: `PORTICO_*`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from chassis import from_env

__all__ = ["InventorySettings"]

_LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}


def _check_url(value: str) -> str | None:
    if not value.startswith(("sqlite+aiosqlite:", "postgresql+asyncpg:")):
        return "must be a sqlite+aiosqlite:/// or postgresql+asyncpg:// URL"
    return None


def _check_level(value: str) -> str | None:
    return None if value.upper() in _LEVELS else f"must be one of {sorted(_LEVELS)}"


def _check_port(value: int) -> str | None:
    return None if 0 <= value <= 65535 else "must be 0..65535"


def _not_negative(value: int) -> str | None:
    return None if value >= 0 else "must not be negative"


@dataclass(frozen=True)
class InventorySettings:
    # Relative to the working directory, like every service's default (var/ is git-ignored).
    database_url: str = field(
        default="sqlite+aiosqlite:///var/inventory/inventory.db", metadata={"check": _check_url}
    )
    host: str = "127.0.0.1"
    port: int = field(default=8103, metadata={"check": _check_port})
    log_level: str = field(default="INFO", metadata={"check": _check_level})
    max_body_bytes: int = 64 * 1024
    # `stock.low` is emitted when a sku's available quantity drops below this.
    low_stock_threshold: int = field(default=5, metadata={"check": _not_negative})
    # Relay the outbox to the broker from this process (tests switch it off).
    relay: bool = True

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> InventorySettings:
        return from_env(cls, "INVENTORY_", environ)
