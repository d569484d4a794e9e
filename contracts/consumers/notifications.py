"""notifications as a consumer of order and payment events: for every event type its
bindings receive (derived from the system, see contracts.boundaries), the example message goes
through notifications' real handler (`handle_event`, inside an inbox-like transaction on a
real SQLite database). The pact lists exactly the fields the handler reads."""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any

from pact import Pact, match
from sqlalchemy import Engine

from chassis import create_db_engine, sqlite_url
from chassis.messaging import Event
from chassis.migrations import upgrade
from services.notifications.adapters.orm import metadata
from services.notifications.domain import compose
from services.notifications.migrations import MIGRATIONS_DIR
from services.notifications.service_layer.handlers import handle_event

from ..boundaries import message_boundaries
from . import ConsumerFailed, label

__all__ = ["EVENT_DATA", "run"]

CONSUMER = "notifications"
ORDER_ID = match.str("7d5e2c1a-0000-4000-8000-000000000001")
OWNER = match.str("alice")
MONEY = match.regex("19.98", regex=r"^\d+\.\d{2}$")

# What the handler reads from each event's `data` (compose + owner bookkeeping).
EVENT_DATA: dict[str, dict[str, Any]] = {
    "order.created": {"order_id": ORDER_ID, "owner": OWNER},
    "order.confirmed": {"order_id": ORDER_ID, "owner": OWNER, "total": MONEY, "currency": "EUR"},
    "order.rejected": {"order_id": ORDER_ID, "owner": OWNER, "reason": match.str("out of stock")},
    "payment.captured": {
        "order_id": ORDER_ID,
        "payment_id": match.str("pay-1"),
        "amount": MONEY,
        "currency": match.str("EUR"),
    },
    "payment.refunded": {"order_id": ORDER_ID, "payment_id": match.str("pay-1"), "amount": MONEY},
}


def envelope(event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    return {
        # one example id per type: the handler records one notification per event id
        "id": match.regex(hashlib.md5(event_type.encode()).hexdigest(), regex=r"^\S+$"),
        "type": event_type,
        "occurred_at": match.regex(
            "2026-01-01T00:00:00.000000Z", regex=r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$"
        ),
        "data": data,
    }


def _handler(engine: Engine, problems: list[str]) -> Any:
    def handle(body: Any, metadata: dict[str, Any]) -> None:
        raw = body.encode() if isinstance(body, str) else bytes(body)
        event = Event.from_message(raw, {})
        with engine.begin() as conn:
            handle_event(event, conn)
        if event.type != "order.created" and compose(event.type, event.data) is None:
            problems.append(f"notifications: {event.type} made no notification")

    return handle


def run(pact_dir: Path, event_data: dict[str, dict[str, Any]] | None = None) -> list[Path]:
    event_data = EVENT_DATA if event_data is None else event_data
    written: list[Path] = []
    problems: list[str] = []
    with tempfile.TemporaryDirectory(prefix="contracts-notifications-") as tmp:
        url = sqlite_url(Path(tmp) / "notifications.db")
        upgrade(metadata, MIGRATIONS_DIR, url)
        engine = create_db_engine(url)
        try:
            for b in message_boundaries():
                if b.consumer != CONSUMER:
                    continue
                pact = Pact(CONSUMER, b.provider).with_specification("V4")
                for item in b.items:
                    event_type = item.removeprefix("event:")
                    if event_type not in event_data:
                        continue  # no contract yet: the matrix reports it missing
                    i = pact.upon_receiving(f"event {event_type}", "Async")
                    label(i, item)
                    i.with_body(envelope(event_type, event_data[event_type]), "application/json")
                    i.with_metadata({"routing_key": event_type})
                try:
                    pact.verify(_handler(engine, problems), "Async")
                except Exception as exc:  # the handler refused an example message
                    errors = getattr(exc, "_errors", None) or [exc]
                    problems.extend(f"notifications <- {b.provider}: {e}" for e in errors)
                pact.write_file(pact_dir, overwrite=True)
                written.append(pact_dir / f"{CONSUMER}-{b.provider}.json")
        finally:
            engine.dispose()
    if problems:
        raise ConsumerFailed("; ".join(problems))
    return written
