"""`order_document` is OrderSchema's dump written out: the two stay equal, key order too."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import pytest

from services.orders.domain import Order, Status, Step
from services.orders.schemas import OrderSchema, order_document


def schema_dump(order: Order) -> dict[str, Any]:
    return OrderSchema().dump(
        {
            "id": order.id,
            "status": order.status.value,
            "reason": order.reason,
            "items": [
                {"sku": ln.sku, "quantity": ln.quantity, "unit_price": ln.unit_price}
                for ln in order.lines
            ],
            "total": order.total,
            "currency": order.currency,
            "payment_method": order.payment_method,
            "payment_id": order.payment_id,
            "created_at": order.created_at,
            "updated_at": order.updated_at,
            "saga": {"step": order.step.value, "attempts": order.attempts},
        }
    )


PRICES = {"A-1": Decimal("10"), "B-2": Decimal("2.5")}
AT = datetime(2026, 12, 6, 19, 30, 1, 123456, tzinfo=UTC)


def orders() -> list[Order]:
    priced, _ = Order.place("alice", [("A-1", 2), ("B-2", 4)], "pm_card_ok", prices=PRICES, now=AT)
    unpriced, _ = Order.place("bob", [("A-1", 1)], "pm_card_ok", now=AT)
    rejected = dataclasses.replace(
        priced,
        status=Status.REJECTED,
        step=Step.DONE,
        reason="out of stock: A-1",
        payment_id="pay-1",
        attempts=3,
        last_error="timeout",
        updated_at=(AT + timedelta(seconds=5)).astimezone(timezone(timedelta(hours=2))),
    )
    return [priced, unpriced, rejected]


@pytest.mark.parametrize("order", orders(), ids=["priced", "unpriced", "rejected"])
def test_order_document_is_the_schemas_dump(order: Order) -> None:
    ours, theirs = order_document(order), schema_dump(order)
    assert ours == theirs
    assert list(ours) == list(theirs)  # the same key order: the same bytes on the wire
