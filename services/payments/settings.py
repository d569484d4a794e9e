"""Payments settings, read once from `PAYMENTS_*` variables (token settings: `PORTICO_*`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from chassis import ConfigError, from_env

__all__ = ["PaymentsSettings"]

_LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}


def _check_url(value: str) -> str | None:
    if not value.startswith(("sqlite:", "postgresql:", "postgresql+psycopg:")):
        return "must be a sqlite:/// or postgresql:// URL"
    return None


def _check_level(value: str) -> str | None:
    return None if value.upper() in _LEVELS else f"must be one of {sorted(_LEVELS)}"


def _not_negative(value: float) -> str | None:
    return None if value >= 0 else "must not be negative"


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be positive"


@dataclass(frozen=True)
class PaymentsSettings:
    # Relative to the working directory, like every service's default (var/ is git-ignored).
    database_url: str = field(
        default="sqlite:///var/payments/payments.db", metadata={"check": _check_url}
    )
    log_level: str = field(default="INFO", metadata={"check": _check_level})
    max_body_bytes: int = 16 * 1024
    # How long the simulated provider takes to answer for `pm_card_slow` (seconds).
    slow_delay: float = field(default=2.0, metadata={"check": _not_negative})
    # A charge still PENDING after this long was abandoned (process killed mid-charge): a retry
    # with the same key takes it over. Keep it above slow_delay.
    pending_lease: float = field(default=10.0, metadata={"check": _positive})
    # Relay the outbox to the broker from this process (one relay per gunicorn worker).
    relay: bool = True

    def __post_init__(self) -> None:
        if self.pending_lease <= self.slow_delay:
            raise ConfigError("PAYMENTS_PENDING_LEASE must be above PAYMENTS_SLOW_DELAY")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PaymentsSettings:
        return from_env(cls, "PAYMENTS_", environ)
