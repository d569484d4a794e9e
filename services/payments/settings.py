"""Payments settings, read once from `PAYMENTS_*` variables (token settings: `PORTICO_*`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from chassis import ConfigError, from_env
from chassis.retention import RetentionSettings
from chassis.settings import log_level, not_negative, positive, secret, sync_database_url

__all__ = ["PaymentsSettings"]


@dataclass(frozen=True)
class PaymentsSettings(RetentionSettings):
    """Also PAYMENTS_RETENTION_DAYS, _PURGE_BATCH, _PURGE_INTERVAL (`chassis.retention`):
    published outbox rows older than the retention are purged."""

    # Relative to the working directory, like every service's default (var/ is git-ignored).
    database_url: str = secret("sqlite:///var/payments/payments.db", check=sync_database_url)
    log_level: str = field(default="INFO", metadata={"check": log_level})
    max_body_bytes: int = 16 * 1024
    # How long the simulated provider takes to answer for `pm_card_slow` (seconds).
    slow_delay: float = field(default=2.0, metadata={"check": not_negative})
    # A charge still PENDING after this long was abandoned (process killed mid-charge): a retry
    # with the same key takes it over. Keep it above slow_delay.
    pending_lease: float = field(default=10.0, metadata={"check": positive})
    # Relay the outbox to the broker from this process (one relay per gunicorn worker).
    relay: bool = True

    def __post_init__(self) -> None:
        if self.pending_lease <= self.slow_delay:
            raise ConfigError("PAYMENTS_PENDING_LEASE must be above PAYMENTS_SLOW_DELAY")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PaymentsSettings:
        return from_env(cls, "PAYMENTS_", environ)
