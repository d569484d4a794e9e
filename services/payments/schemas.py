"""Marshmallow schemas: request validation, response shapes, and the OpenAPI components.

Class names are unique across services (the gateway merges every service's document).
No field for card data exists: a `card_number` (or any unknown field) is a 422, and the
value is never echoed.
"""

from __future__ import annotations

import re
from typing import Any

from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, pre_load, validate

from chassis import BoundedDecimal, BoundedInteger, FullMatch
from chassis.validation import domain_rule

from .domain import AMOUNT_DIGITS, CURRENCY, PAYMENT_METHODS, check_payment_method, to_cents

__all__ = [
    "ChargeRequestSchema",
    "PaymentListQuerySchema",
    "PaymentListSchema",
    "PaymentSchema",
]

ORDER_ID = re.compile(r"^[\x21-\x7e]{1,64}$")  # always fullmatch (FullMatch)
OWNER = re.compile(r"^[\x21-\x7e]{1,255}$")  # always fullmatch (FullMatch)
_CARD_FIELDS = {"card", "card_number", "number", "pan", "cvc", "cvv", "exp_month", "exp_year"}
_AMOUNT_DOC = {
    "type": "string",
    "pattern": rf"^\d{{1,{AMOUNT_DIGITS}}}(\.\d{{1,2}})?$",
    "example": "79.80",
}


class Cents(BoundedDecimal):
    """A decimal string in ("12.50"; numbers refused: no binary floats for money), cents out.

    The text is bounded (digits, places, ASCII, no sign or spaces) before it is converted."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(digits=AMOUNT_DIGITS, places=2, numbers=False, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        amount = super()._deserialize(value, attr, data, **kwargs)
        try:
            return to_cents(amount)
        except ValueError as exc:
            raise ValidationError(str(exc)) from exc


class ChargeRequestSchema(Schema):
    class Meta:
        unknown = RAISE

    order_id = fields.String(
        required=True,
        validate=FullMatch(ORDER_ID, error="must be 1-64 visible ASCII characters"),
    )
    amount = Cents(required=True, metadata=_AMOUNT_DOC)
    owner = fields.String(
        validate=FullMatch(OWNER, error="must be 1-255 visible ASCII characters"),
        metadata={
            "description": "the user the payment is for (orders sends the order's owner); "
            "default: the caller's token subject. Only that user, or a payments:read:all "
            "token, can read the payment"
        },
    )
    currency = fields.String(load_default=CURRENCY, validate=validate.OneOf([CURRENCY]))
    payment_method = fields.String(
        required=True,
        validate=domain_rule(check_payment_method),
        metadata={"enum": list(PAYMENT_METHODS), "description": "a test payment-method token"},
    )

    @pre_load
    def _no_card_data(self, data: Any, **_: Any) -> Any:
        if isinstance(data, dict):
            raw = sorted(_CARD_FIELDS & set(data))
            if raw:
                message = "raw card data is never accepted: send a payment_method token"
                raise ValidationError({name: [message] for name in raw})
        return data


class PaymentSchema(Schema):
    id = fields.String(required=True, metadata={"format": "uuid"})
    order_id = fields.String(required=True)
    amount = fields.String(required=True, metadata=_AMOUNT_DOC)
    currency = fields.String(required=True, metadata={"enum": [CURRENCY]})
    payment_method = fields.String(required=True)
    status = fields.String(
        required=True, metadata={"enum": ["PENDING", "CAPTURED", "DECLINED", "REFUNDED"]}
    )
    decline_code = fields.String(allow_none=True)
    created_at = fields.String(required=True, metadata={"format": "date-time"})
    refunded_at = fields.String(allow_none=True, metadata={"format": "date-time"})


class PaymentListSchema(Schema):
    items = fields.List(fields.Nested(PaymentSchema), required=True)


class PaymentListQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    order_id = fields.String(validate=FullMatch(ORDER_ID, error="invalid order id"))
    limit = BoundedInteger(load_default=100, validate=validate.Range(1, 100))
