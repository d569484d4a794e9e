"""The event envelope, broker settings and the kombu plumbing both ends share.

An event travels as a JSON body `{"id", "type", "occurred_at", "data"}` on one durable topic
exchange with the event type as routing key; an event-sourced service's events also carry
`"stream"`, `"version"` and `"position"` (its place in the stream and in the log, ADR 0029),
serialized only when set so that every other message is unchanged. The correlation id rides
in the message headers so that a consumer logs under the id of the request that caused it.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import orjson
from kombu import Connection, Exchange

from ..logging import correlation_id as _correlation_id
from ..settings import from_env, secret

__all__ = [
    "CORRELATION_HEADER",
    "DELIVERIES_HEADER",
    "BrokerSettings",
    "Event",
    "check_broker",
    "connect",
    "events_exchange",
]

CORRELATION_HEADER = "correlation_id"
DELIVERIES_HEADER = "x-portico-deliveries"  # failed handling attempts so far, set on republish
ERROR_HEADER = "x-portico-error"
CONTENT_TYPE = "application/json"

# memory:// and filesystem:// lose unacknowledged messages or stay inside one process.
_SCHEMES = {"amqp", "amqps", "pyamqp", "redis", "rediss"}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _new_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True)
class Event:
    """One fact that happened in a service, addressed by its type."""

    type: str
    data: dict[str, Any]
    id: str = field(default_factory=_new_id)
    occurred_at: str = field(default_factory=_now)
    correlation_id: str | None = field(default_factory=_correlation_id.get)
    # Event-sourced streams only (ADR 0029): the aggregate id, the 1-based version in its
    # stream, the global position in the service's event log.
    stream: str | None = None
    version: int | None = None
    position: int | None = None

    def body(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "id": self.id,
            "type": self.type,
            "occurred_at": self.occurred_at,
            "data": self.data,
        }
        if self.stream is not None:
            doc["stream"] = self.stream
        if self.version is not None:
            doc["version"] = self.version
        if self.position is not None:
            doc["position"] = self.position
        return doc

    def to_json(self) -> bytes:
        return orjson.dumps(self.body())

    def headers(self) -> dict[str, Any]:
        return {CORRELATION_HEADER: self.correlation_id} if self.correlation_id else {}

    @classmethod
    def from_message(
        cls, body: bytes | str | Mapping[str, Any], headers: Mapping[str, Any]
    ) -> Event:
        """Parse a received message; ValueError when it is not a well-formed event."""
        doc = orjson.loads(body) if isinstance(body, bytes | str) else body
        if not isinstance(doc, Mapping):
            raise ValueError("event body is not a JSON object")
        kinds = {"id": str, "type": str, "occurred_at": str, "data": dict}
        bad = [k for k, kind in kinds.items() if not isinstance(doc.get(k), kind)]
        if bad:
            raise ValueError(f"event body lacks or mistypes {', '.join(bad)}")
        stream, version, position = doc.get("stream"), doc.get("version"), doc.get("position")
        if stream is not None and not isinstance(stream, str):
            raise ValueError("event stream is not a string")
        for name, value in (("version", version), ("position", position)):
            if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
                raise ValueError(f"event {name} is not an integer")
        cid = headers.get(CORRELATION_HEADER)
        return cls(
            type=doc["type"],
            data=doc["data"],
            id=doc["id"],
            occurred_at=doc["occurred_at"],
            correlation_id=str(cid) if cid else None,
            stream=stream,
            version=version,
            position=position,
        )


def _check_url(url: str) -> str | None:
    scheme = urlsplit(url).scheme
    if scheme not in _SCHEMES:
        return (
            f"scheme must be one of {sorted(_SCHEMES)} (memory:// and filesystem:// lose messages)"
        )
    return None


def _positive(value: float) -> str | None:
    return None if value > 0 else "must be positive"


@dataclass(frozen=True)
class BrokerSettings:
    """Where events go; shared by every service (PORTICO_* variables)."""

    url: str = secret("redis://127.0.0.1:6379/0", env="PORTICO_BROKER_URL", check=_check_url)
    exchange: str = field(default="portico.events", metadata={"env": "PORTICO_EVENTS_EXCHANGE"})
    queue_prefix: str = field(default="", metadata={"env": "PORTICO_QUEUE_PREFIX"})
    max_deliveries: int = field(
        default=5, metadata={"env": "PORTICO_MAX_DELIVERIES", "check": _positive}
    )
    # redis:// only: an unacknowledged message (its consumer died) is redelivered after this
    # many seconds, so it must exceed the longest handler run.
    visibility_timeout: float = field(
        default=60.0, metadata={"env": "PORTICO_BROKER_VISIBILITY_TIMEOUT", "check": _positive}
    )
    # redis:// only: prefix for every key kombu writes (tests isolate themselves with it).
    key_prefix: str = field(default="", metadata={"env": "PORTICO_BROKER_KEY_PREFIX"})

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> BrokerSettings:
        return from_env(cls, "PORTICO_", environ)

    @property
    def is_redis(self) -> bool:
        return urlsplit(self.url).scheme in {"redis", "rediss"}

    def replace(self, **changes: Any) -> BrokerSettings:
        return dataclasses.replace(self, **changes)


def connect(settings: BrokerSettings) -> Connection:
    """A new kombu connection (not yet connected) with the transport options we rely on.

    AMQP gets publisher confirms, so a publish returns only once RabbitMQ has the message.
    Redis gets acknowledgement emulation with a visibility timeout, so messages held by a
    consumer that dies are restored to their queue.
    """
    if settings.is_redis:
        options: dict[str, Any] = {
            "visibility_timeout": settings.visibility_timeout,
            "unacked_restore_throttle": 1,
            "socket_timeout": 10,
            "socket_connect_timeout": 3,
        }
        if settings.key_prefix:
            options["global_keyprefix"] = settings.key_prefix
    else:
        options = {"confirm_publish": True}
    return Connection(settings.url, transport_options=options, connect_timeout=3)


def events_exchange(settings: BrokerSettings) -> Exchange:
    return Exchange(settings.exchange, type="topic", durable=True)


def check_broker(settings: BrokerSettings) -> None:
    """Readiness check: raise unless the broker accepts a connection now."""
    with connect(settings) as conn:
        conn.ensure_connection(max_retries=1, timeout=3)
