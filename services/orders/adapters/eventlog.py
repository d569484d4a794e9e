"""Orders' event store (`chassis.eventstore`) and the upcasters of its event schemas.

Schema history, per type (bump the version and add an upcaster when a `data` changes shape):

- `order.created` v1 (before ADR 0029): no `payment_method`. v2: with it. A v1 event is read
  as v2 with `payment_method` "unknown" (the method was not recorded then).
"""

from __future__ import annotations

from typing import Any

from chassis.eventstore import EventStore, Upcasters

from .orm import order_events, outbox

__all__ = ["STORE", "UNKNOWN_PAYMENT_METHOD", "UPCASTERS"]

UNKNOWN_PAYMENT_METHOD = "unknown"
UPCASTERS = Upcasters()


@UPCASTERS.register("order.created", 1)
def _created_v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    data.setdefault("payment_method", UNKNOWN_PAYMENT_METHOD)
    return data


STORE = EventStore(order_events, outbox, UPCASTERS)
