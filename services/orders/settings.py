"""Orders settings, read once from `ORDERS_*` variables (token settings: `PORTICO_*`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

from chassis import ConfigError, from_env

__all__ = ["OrdersSettings"]

_LEVELS = {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}


def _check_url(value: str) -> str | None:
    if not value.startswith(("sqlite", "postgresql")):
        return "must be a sqlite+aiosqlite:/// or postgresql+asyncpg:// URL"
    return None


def _check_level(value: str) -> str | None:
    return None if value.upper() in _LEVELS else f"must be one of {sorted(_LEVELS)}"


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be positive"


def _port(value: int) -> str | None:
    return None if 0 <= value <= 65535 else "must be 0..65535"


def _http(value: str) -> str | None:
    return None if value.startswith(("http://", "https://")) else "must be an http(s) URL"


@dataclass(frozen=True)
class OrdersSettings:
    database_url: str = field(
        default="sqlite+aiosqlite:///var/orders/orders.db", metadata={"check": _check_url}
    )
    host: str = "127.0.0.1"
    port: int = field(default=8104, metadata={"check": _port})
    log_level: str = field(default="INFO", metadata={"check": _check_level})
    max_body_bytes: int = 64 * 1024
    # Upstreams, called with orders' own service token (client_credentials).
    catalog_url: str = field(default="http://127.0.0.1:8102", metadata={"check": _http})
    inventory_url: str = field(default="http://127.0.0.1:8103", metadata={"check": _http})
    payments_url: str = field(default="http://127.0.0.1:8105", metadata={"check": _http})
    token_url: str = field(default="http://127.0.0.1:8101/oauth/token", metadata={"check": _http})
    client_id: str | None = None  # else read from client_file (written by identity init)
    client_secret: str | None = None
    client_file: str = "var/orders/client.json"
    # Per-call timeouts (seconds); payments' must exceed the provider's slow answer.
    catalog_timeout: float = field(default=2.0, metadata={"check": _positive})
    inventory_timeout: float = field(default=3.0, metadata={"check": _positive})
    payments_timeout: float = field(default=5.0, metadata={"check": _positive})
    retry_attempts: int = 3
    retry_base_delay: float = 0.05
    breaker_failure_threshold: int = 5
    breaker_recovery_timeout: float = field(default=5.0, metadata={"check": _positive})
    # The saga driver: how often it looks for due sagas, how long a claim on one lasts,
    # how far apart retries of an unavailable step get, how many sagas run at once.
    saga_poll_interval: float = field(default=1.0, metadata={"check": _positive})
    saga_lease: float = field(default=30.0, metadata={"check": _positive})
    saga_retry_base: float = field(default=0.5, metadata={"check": _positive})
    saga_retry_max: float = field(default=10.0, metadata={"check": _positive})
    saga_concurrency: int = 32
    # A stable id lets a restarted process take back its own leases at once; default: random.
    instance_id: str | None = None
    # Relay outbox events to the broker (PORTICO_BROKER_URL); off only in tests.
    publish_events: bool = True

    def __post_init__(self) -> None:
        worst_step = self.retry_attempts * max(
            self.catalog_timeout, self.inventory_timeout, self.payments_timeout
        )
        if self.saga_lease <= worst_step:
            raise ConfigError(
                f"invalid configuration: ORDERS_SAGA_LEASE={self.saga_lease} must exceed "
                f"ORDERS_RETRY_ATTEMPTS x the longest timeout ({worst_step:g} s), or two "
                "processes could run the same saga step"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OrdersSettings:
        return from_env(cls, "ORDERS_", environ)

    def replace(self, **changes: object) -> OrdersSettings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
