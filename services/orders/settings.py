"""Orders settings, read once from `ORDERS_*` variables (token settings: `PORTICO_*`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field

from chassis import ConfigError, from_env
from chassis.retention import RetentionSettings
from chassis.settings import async_database_url, http_url, log_level, port, positive, secret

from .adapters.inventory_grpc import check_targets
from .adapters.inventory_transport import check_transport

__all__ = ["OrdersSettings"]


@dataclass(frozen=True)
class OrdersSettings(RetentionSettings):
    """Also ORDERS_RETENTION_DAYS, _PURGE_BATCH, _PURGE_INTERVAL (`chassis.retention`):
    published outbox rows older than the retention are purged."""

    database_url: str = secret("sqlite+aiosqlite:///var/orders/orders.db", check=async_database_url)
    host: str = "127.0.0.1"
    port: int = field(default=8104, metadata={"check": port})
    log_level: str = field(default="INFO", metadata={"check": log_level})
    max_body_bytes: int = 64 * 1024
    # Upstreams, called with orders' own service token (client_credentials).
    catalog_url: str = field(default="http://127.0.0.1:8102", metadata={"check": http_url})
    inventory_url: str = field(default="http://127.0.0.1:8103", metadata={"check": http_url})
    payments_url: str = field(default="http://127.0.0.1:8105", metadata={"check": http_url})
    token_url: str = field(
        default="http://127.0.0.1:8101/oauth/token", metadata={"check": http_url}
    )
    client_id: str | None = None  # else read from client_file (written by identity init)
    client_secret: str | None = secret(None)  # or ORDERS_CLIENT_SECRET_FILE
    client_file: str = "var/orders/client.json"
    # Per-call timeouts (seconds); payments' must exceed the provider's slow answer.
    catalog_timeout: float = field(default=2.0, metadata={"check": positive})
    inventory_timeout: float = field(default=3.0, metadata={"check": positive})
    payments_timeout: float = field(default=5.0, metadata={"check": positive})
    # Inventory's saga steps over gRPC (default) or REST (ADR 0027). The gRPC targets are
    # host:port, comma-separated: several IP addresses (one per instance) or one DNS name
    # (every address it resolves to); calls are balanced round_robin over the instances whose
    # health check says SERVING. A deadline per call; keepalive pings every
    # ORDERS_INVENTORY_GRPC_KEEPALIVE s, a peer silent for _KEEPALIVE_TIMEOUT s is dropped.
    # UNAVAILABLE is retried by the channel (ORDERS_RETRY_ATTEMPTS in all, at most 5, backoff
    # from ORDERS_RETRY_BASE_DELAY).
    inventory_transport: str = field(default="grpc", metadata={"check": check_transport})
    inventory_grpc_targets: tuple[str, ...] = field(
        default=("127.0.0.1:50061",), metadata={"check": check_targets}
    )
    inventory_grpc_deadline: float = field(default=3.0, metadata={"check": positive})
    inventory_grpc_keepalive: float = field(default=20.0, metadata={"check": positive})
    inventory_grpc_keepalive_timeout: float = field(default=10.0, metadata={"check": positive})
    retry_attempts: int = 3
    retry_base_delay: float = 0.05
    breaker_failure_threshold: int = 5
    breaker_recovery_timeout: float = field(default=5.0, metadata={"check": positive})
    # The saga driver: how often it looks for due sagas, how long a claim on one lasts,
    # how far apart retries of an unavailable step get, how many sagas run at once.
    saga_poll_interval: float = field(default=1.0, metadata={"check": positive})
    saga_lease: float = field(default=30.0, metadata={"check": positive})
    saga_retry_base: float = field(default=0.5, metadata={"check": positive})
    saga_retry_max: float = field(default=10.0, metadata={"check": positive})
    saga_concurrency: int = 32
    # A forward saga step (PRICE, RESERVE, CHARGE) still failing this many seconds after it
    # began is given up: compensated, the order REJECTED with the reason (issue 18, must 6).
    saga_step_timeout: float = field(default=300.0, metadata={"check": positive})
    # A stable id lets a restarted process take back its own leases at once; default: random.
    instance_id: str | None = None
    # Relay outbox events to the broker (PORTICO_BROKER_URL); off only in tests.
    publish_events: bool = True

    def __post_init__(self) -> None:
        worst_step = self.retry_attempts * max(
            self.catalog_timeout,
            self.inventory_timeout,
            self.payments_timeout,
            self.inventory_grpc_deadline,
        )
        if self.saga_lease <= worst_step:
            raise ConfigError(
                f"invalid configuration: ORDERS_SAGA_LEASE={self.saga_lease} must exceed "
                f"ORDERS_RETRY_ATTEMPTS x the longest timeout ({worst_step:g} s), or two "
                "processes could run the same saga step"
            )
        if self.saga_step_timeout <= max(worst_step, self.saga_retry_max):
            raise ConfigError(
                f"invalid configuration: ORDERS_SAGA_STEP_TIMEOUT={self.saga_step_timeout} "
                f"must exceed one step's worst call ({worst_step:g} s) and ORDERS_SAGA_RETRY_MAX "
                f"({self.saga_retry_max:g} s), or a step could time out before a second try"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> OrdersSettings:
        return from_env(cls, "ORDERS_", environ)

    def replace(self, **changes: object) -> OrdersSettings:
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]
