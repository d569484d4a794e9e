"""Notifications settings, read once from `NOTIFICATIONS_*` variables (broker and token
settings: `PORTICO_*`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from chassis import from_env
from chassis.retention import RetentionSettings
from chassis.settings import async_database_url, log_level, port, secret

__all__ = ["NotificationsSettings"]


@dataclass(frozen=True)
class NotificationsSettings(RetentionSettings):
    """Also NOTIFICATIONS_RETENTION_DAYS, _PURGE_BATCH, _PURGE_INTERVAL (`chassis.retention`):
    inbox rows older than the retention are purged."""

    database_url: str = secret(
        "sqlite+aiosqlite:///var/notifications/notifications.db", check=async_database_url
    )
    host: str = "127.0.0.1"
    port: int = field(default=8106, metadata={"check": port})
    log_level: str = field(default="INFO", metadata={"check": log_level})
    max_body_bytes: int = 16 * 1024
    # Consume events from the broker (PORTICO_BROKER_URL); off only in tests.
    consume: bool = True

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> NotificationsSettings:
        return from_env(cls, "NOTIFICATIONS_", environ)
