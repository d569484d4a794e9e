"""Marshmallow schemas: request validation, response shapes, and the OpenAPI components."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validate, validates_schema

from chassis import BoundedInteger, FullMatch
from chassis.pagination import CURSOR_DOC

from .domain import CURRENCY, Order, Status, Step

__all__ = [
    "FeedQuerySchema",
    "FeedSchema",
    "ListQuerySchema",
    "OrderHistorySchema",
    "OrderInputSchema",
    "OrderPageSchema",
    "OrderQuerySchema",
    "OrderSchema",
    "order_document",
    "parse_rfc3339",
]

MAX_ITEMS = 50
MAX_QUANTITY = 1000
DEFAULT_LIMIT = 20
MAX_LIMIT = 100

_MONEY_DOC = {"type": "string", "pattern": r"^\d+\.\d{2}$", "example": "79.80"}
# Test-mode payment method tokens, as payment providers use them; never a card number.
_PAYMENT_METHOD = FullMatch(
    r"^pm_[A-Za-z0-9_]{1,60}$", error="must be a payment method token such as pm_card_ok"
)


class ItemSchema(Schema):
    class Meta:
        unknown = RAISE

    sku = fields.String(
        required=True,
        validate=FullMatch(r"^[A-Z0-9][A-Z0-9-]{2,63}$", error="must be a sku such as BK-0001"),
        metadata={"example": "BK-0001"},
    )
    quantity = BoundedInteger(required=True, strict=True, validate=validate.Range(1, MAX_QUANTITY))


class OrderInputSchema(Schema):
    """An order as a client places it; unknown fields (a card number, say) are refused."""

    class Meta:
        unknown = RAISE

    items = fields.List(
        fields.Nested(ItemSchema), required=True, validate=validate.Length(1, MAX_ITEMS)
    )
    payment_method = fields.String(
        required=True, validate=_PAYMENT_METHOD, metadata={"example": "pm_card_ok"}
    )

    @validates_schema
    def _distinct_skus(self, data: dict[str, Any], **_: Any) -> None:
        skus = [item["sku"] for item in data.get("items", [])]
        if len(skus) != len(set(skus)):
            raise ValidationError("each sku may appear once; add up the quantities", "items")


class LineSchema(Schema):
    sku = fields.String(required=True)
    quantity = fields.Integer(required=True)
    unit_price = fields.Decimal(
        as_string=True, places=2, allow_none=True, metadata={**_MONEY_DOC, "nullable": True}
    )


class SagaSchema(Schema):
    step = fields.String(metadata={"enum": [s.value for s in Step]})
    attempts = fields.Integer(metadata={"description": "failed tries of the current step"})


class OrderSchema(Schema):
    """An order as the API returns it; `total` is null until the catalog has priced it."""

    id = fields.String(metadata={"format": "uuid"})
    status = fields.String(metadata={"enum": [s.value for s in Status]})
    reason = fields.String(
        allow_none=True, metadata={"description": "why it was rejected", "nullable": True}
    )
    items = fields.List(fields.Nested(LineSchema))
    total = fields.Decimal(
        as_string=True, places=2, allow_none=True, metadata={**_MONEY_DOC, "nullable": True}
    )
    currency = fields.String(metadata={"enum": [CURRENCY]})
    payment_method = fields.String()
    payment_id = fields.String(allow_none=True, metadata={"nullable": True})
    created_at = fields.AwareDateTime()
    updated_at = fields.AwareDateTime()
    saga = fields.Nested(SagaSchema)


_CENT = Decimal("0.01")


def _money(value: Decimal | None) -> str | None:
    return None if value is None else format(value.quantize(_CENT), "f")


def order_document(order: Order) -> dict[str, Any]:
    """`OrderSchema().dump(...)` of an order, written out (same keys, same order): the read by
    id answers with one, and marshmallow's field-by-field walk was ~15% of its CPU (issue
    17). The unit tests hold the two equal."""
    return {
        "id": order.id,
        "status": order.status.value,
        "reason": order.reason,
        "items": [
            {"sku": ln.sku, "quantity": ln.quantity, "unit_price": _money(ln.unit_price)}
            for ln in order.lines
        ],
        "total": _money(order.total),
        "currency": order.currency,
        "payment_method": order.payment_method,
        "payment_id": order.payment_id,
        "created_at": order.created_at.isoformat(),
        "updated_at": order.updated_at.isoformat(),
        "saga": {"step": order.step.value, "attempts": order.attempts},
    }


class OrderPageSchema(Schema):
    items = fields.List(fields.Nested(OrderSchema), required=True)
    next_cursor = fields.String(
        allow_none=True, required=True, metadata={"description": "null on the last page"}
    )


class ListQuerySchema(Schema):
    """GET /orders query parameters; unknown parameters are ignored."""

    class Meta:
        unknown = EXCLUDE

    limit = BoundedInteger(
        load_default=DEFAULT_LIMIT, validate=validate.Range(1, MAX_LIMIT), metadata={"default": 20}
    )
    cursor = fields.String(metadata=CURSOR_DOC)
    status = fields.String(validate=validate.OneOf([s.value for s in Status]))


# RFC 3339 date-time (section 5.6): a full date, `T`, a time with optional fraction, and `Z`
# or a numeric offset. Anything else (a date alone, no offset, epoch seconds) is refused.
_RFC3339 = re.compile(
    r"(\d{4}-\d{2}-\d{2})[Tt](\d{2}:\d{2}:\d{2})(?:\.(\d{1,9}))?([Zz]|[+-]\d{2}:\d{2})"
)


def parse_rfc3339(value: str) -> datetime:
    """An aware UTC datetime; ValueError for anything but an RFC 3339 date-time."""
    found = _RFC3339.fullmatch(value) if len(value) <= 40 else None
    if found is None:
        raise ValueError("must be an RFC 3339 date-time such as 2026-01-31T12:00:00Z")
    day, clock, fraction, offset = found.groups()
    micros = (fraction or "").ljust(6, "0")[:6]
    offset = "+00:00" if offset in ("Z", "z") else offset
    return datetime.fromisoformat(f"{day}T{clock}.{micros}{offset}").astimezone(UTC)


class RFC3339(fields.Field):
    """A query parameter holding an RFC 3339 date-time, loaded as an aware UTC datetime."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        if not isinstance(value, str):
            raise ValidationError("must be a string")
        try:
            return parse_rfc3339(value)
        except ValueError as exc:  # the format's message, or fromisoformat's (month 13...)
            raise ValidationError(f"not an RFC 3339 date-time: {exc}"[:200]) from exc


class OrderQuerySchema(Schema):
    """GET /orders/{id} query parameters; unknown parameters are ignored."""

    class Meta:
        unknown = EXCLUDE

    as_of = RFC3339(
        metadata={
            "type": "string",
            "format": "date-time",
            "description": "the order as it was at this RFC 3339 time (folded from its events)",
        }
    )


class HistoryEventSchema(Schema):
    version = fields.Integer(metadata={"description": "1-based, no gaps"})
    type = fields.String(metadata={"example": "order.stock_reserved"})
    occurred_at = fields.String(metadata={"format": "date-time"})
    cause = fields.String(
        allow_none=True,
        metadata={"nullable": True, "description": "the request or saga step that caused it"},
    )
    data = fields.Dict()


class OrderHistorySchema(Schema):
    order_id = fields.String(metadata={"format": "uuid"})
    events = fields.List(fields.Nested(HistoryEventSchema))


MAX_FEED_LIMIT = 1000
DEFAULT_FEED_LIMIT = 500


class FeedQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    after = BoundedInteger(
        load_default=0, validate=validate.Range(0, 2**63 - 1), metadata={"default": 0}
    )
    limit = BoundedInteger(
        load_default=DEFAULT_FEED_LIMIT,
        validate=validate.Range(1, MAX_FEED_LIMIT),
        metadata={"default": DEFAULT_FEED_LIMIT},
    )


class FeedEventSchema(Schema):
    """The published envelope (`chassis.messaging.Event.body`) with its place in the log."""

    id = fields.String()
    type = fields.String()
    occurred_at = fields.String(metadata={"format": "date-time"})
    data = fields.Dict()
    stream = fields.String(metadata={"description": "the order id"})
    version = fields.Integer()
    position = fields.Integer()


class FeedSchema(Schema):
    events = fields.List(fields.Nested(FeedEventSchema))
    last_position = fields.Integer(metadata={"description": "the highest position in the log"})
