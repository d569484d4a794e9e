"""Notifications settings, read once from `NOTIFICATIONS_*` variables (broker and token
settings: `PORTICO_*`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from chassis import from_env

__all__ = ["NotificationsSettings"]

_LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}


def _check_url(value: str) -> str | None:
    if not value.startswith(("sqlite", "postgresql")):
        return "must be a sqlite+aiosqlite:/// or postgresql+asyncpg:// URL"
    return None


def _check_level(value: str) -> str | None:
    return None if value.upper() in _LEVELS else f"must be one of {sorted(_LEVELS)}"


def _port(value: int) -> str | None:
    return None if 0 <= value <= 65535 else "must be 0..65535"


@dataclass(frozen=True)
class NotificationsSettings:
    database_url: str = field(
        default="sqlite+aiosqlite:///var/notifications/notifications.db",
        metadata={"check": _check_url},
    )
    host: str = "127.0.0.1"
    port: int = field(default=8106, metadata={"check": _port})
    log_level: str = field(default="INFO", metadata={"check": _check_level})
    max_body_bytes: int = 16 * 1024
    # Consume events from the broker (PORTICO_BROKER_URL); off only in tests.
    consume: bool = True

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> NotificationsSettings:
        return from_env(cls, "NOTIFICATIONS_", environ)
