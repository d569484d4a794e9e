"""Notifications settings, read once from `NOTIFICATIONS_*` variables (broker and token
settings: `PORTICO_*`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from chassis import from_env
from chassis.retention import RetentionSettings
from chassis.settings import async_database_url, log_level, port, secret

__all__ = ["NotificationsSettings"]


def _between(low: float, high: float) -> Callable[[float], str | None]:
    def check(value: float) -> str | None:
        return None if low <= value <= high else f"must be {low:g}..{high:g}"

    return check


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
    # Live streams (SSE and WebSocket, ADR 0035): a heartbeat (SSE comment / WS ping) after
    # this many quiet seconds; a peer that does not take it within the same time (SSE) or
    # answer the ping within half of it (WS) is dead and its stream ends.
    stream_heartbeat: float = field(default=15.0, metadata={"check": _between(0.05, 300)})
    # Each stream also reads the store this often: notifications stored by another process.
    stream_poll: float = field(default=5.0, metadata={"check": _between(0.05, 300)})
    # Open streams per consumer (token subject) in this process; over it: 429.
    stream_limit: int = field(default=5, metadata={"check": _between(1, 1000)})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> NotificationsSettings:
        return from_env(cls, "NOTIFICATIONS_", environ)
