"""Views settings, read once from `VIEWS_*` variables (broker and token settings: `PORTICO_*`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

from chassis import from_env
from chassis.retention import RetentionSettings
from chassis.settings import async_database_url, http_url, log_level, port, positive, secret

__all__ = ["ViewsSettings"]


def _feed_page(value: int) -> str | None:
    return None if 1 <= value <= 1000 else "must be between 1 and 1000 (the feed's bound)"


@dataclass(frozen=True)
class ViewsSettings(RetentionSettings):
    """Also VIEWS_RETENTION_DAYS, _PURGE_BATCH, _PURGE_INTERVAL (`chassis.retention`): inbox
    rows older than the retention are purged."""

    database_url: str = secret("sqlite+aiosqlite:///var/views/views.db", check=async_database_url)
    host: str = "127.0.0.1"
    port: int = field(default=8107, metadata={"check": port})
    log_level: str = field(default="INFO", metadata={"check": log_level})
    max_body_bytes: int = 16 * 1024
    # orders' history feed (GET /internal/v1/events), read with views' own service token.
    orders_url: str = field(default="http://127.0.0.1:8104", metadata={"check": http_url})
    token_url: str = field(
        default="http://127.0.0.1:8101/oauth/token", metadata={"check": http_url}
    )
    client_id: str | None = None  # else read from client_file (written by identity init)
    client_secret: str | None = secret(None)  # or VIEWS_CLIENT_SECRET_FILE
    client_file: str = "var/views/client.json"
    feed_page: int = field(default=500, metadata={"check": _feed_page})
    feed_timeout: float = field(default=5.0, metadata={"check": positive})
    # Answers from a read model more than this many seconds behind are 503 (ADR 0030).
    max_lag: float = field(default=30.0, metadata={"check": positive})
    # How often the feed is read again while a catch-up has not succeeded (orders down).
    catch_up_retry: float = field(default=2.0, metadata={"check": positive})
    # Consume events from the broker (PORTICO_BROKER_URL) and catch up; off only in tests.
    consume: bool = True

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ViewsSettings:
        return from_env(cls, "VIEWS_", environ)

    def replace(self, **changes: object) -> ViewsSettings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
