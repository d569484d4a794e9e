"""Events between services: kombu topic exchange, transactional outbox, idempotent inbox.

Services declare their exchange and queues only through these classes; none talks kombu
directly. See `outbox` (publishing side) and `inbox` (consuming side) for the guarantees.
"""

from .events import BrokerSettings, Event, check_broker, connect, events_exchange
from .inbox import EventConsumer, Handler, inbox_table
from .outbox import (
    OutboxRelay,
    OutboxWriter,
    RelayHandle,
    broker_ready,
    outbox_insert,
    outbox_table,
    start_relay,
)

__all__ = [
    "BrokerSettings",
    "Event",
    "EventConsumer",
    "Handler",
    "OutboxRelay",
    "OutboxWriter",
    "RelayHandle",
    "broker_ready",
    "check_broker",
    "connect",
    "events_exchange",
    "inbox_table",
    "outbox_insert",
    "outbox_table",
    "start_relay",
]
