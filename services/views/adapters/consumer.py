"""The chassis consumer, keeping each message's decoded body for the handler.

The chassis `Event` carries `id/type/occurred_at/data`; orders' events also carry `stream`,
`version` and `position` in the same JSON body (ADR 0030). Until every `Event` carries them,
the body is read here, on the consumer's thread, and handed to the handler through a context
variable; `received_envelope` prefers the Event's own attributes when it has them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import orjson
from kombu import Message

from chassis.messaging import Event, EventConsumer

from ..domain import Envelope, parse_envelope

__all__ = ["ProjectionConsumer", "message_body", "received_envelope"]

_BODY: ContextVar[Mapping[str, Any] | None] = ContextVar("views_event_body", default=None)
_ENVELOPE_FIELDS = ("stream", "version", "position")


@contextmanager
def message_body(raw: bytes | str) -> Iterator[None]:
    """While handling the message whose body is `raw` (what the consumer does per message;
    the contract tests do the same around the handler)."""
    try:
        doc = orjson.loads(raw)
    except (orjson.JSONDecodeError, TypeError):
        doc = None  # the chassis dead-letters it as malformed
    token = _BODY.set(doc if isinstance(doc, Mapping) else None)
    try:
        yield
    finally:
        _BODY.reset(token)


class ProjectionConsumer(EventConsumer):
    def _on_message(self, message: Message) -> None:
        with message_body(message.body):
            super()._on_message(message)


def received_envelope(event: Event) -> Envelope:
    """The envelope of the event in hand: the Event's fields plus stream/version/position."""
    doc: dict[str, Any] = dict(event.body())
    body = _BODY.get()
    for key in _ENVELOPE_FIELDS:
        value = getattr(event, key, None)
        if value is None and body is not None and body.get("id") == event.id:
            value = body.get(key)
        if value is not None:
            doc[key] = value
    return parse_envelope(doc)
