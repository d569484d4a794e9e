"""Marshmallow schemas: request validation, response shapes, and the OpenAPI components.

Class names are unique across services (the gateway merges every service's document).
"""

from __future__ import annotations

import re

from marshmallow import RAISE, Schema, fields, validate

from chassis import BoundedInteger, FullMatch
from chassis.validation import domain_rule

from .domain import check_quantity, check_sku

__all__ = [
    "ReservationLineSchema",
    "ReservationSchema",
    "ReserveRequestSchema",
    "StockLevelSchema",
    "StockUpdateSchema",
]

ORDER_ID = re.compile(r"^[\x21-\x7e]{1,64}$")  # always fullmatch (FullMatch, .fullmatch)


class StockLevelSchema(Schema):
    sku = fields.String(required=True, metadata={"example": "BK-0001"})
    on_hand = fields.Integer(required=True)
    reserved = fields.Integer(required=True)
    available = fields.Integer(required=True, metadata={"description": "on_hand - reserved"})


class StockUpdateSchema(Schema):
    class Meta:
        unknown = RAISE

    on_hand = BoundedInteger(required=True, strict=True, validate=validate.Range(0, 1_000_000_000))


class ReservationLineSchema(Schema):
    class Meta:
        unknown = RAISE

    sku = fields.String(required=True, validate=domain_rule(check_sku))
    quantity = BoundedInteger(required=True, strict=True, validate=domain_rule(check_quantity))


class ReserveRequestSchema(Schema):
    class Meta:
        unknown = RAISE

    order_id = fields.String(
        required=True,
        validate=FullMatch(ORDER_ID, error="must be 1-64 visible ASCII characters"),
    )
    items = fields.List(
        fields.Nested(ReservationLineSchema), required=True, validate=validate.Length(1, 100)
    )


class ShortageSchema(Schema):
    sku = fields.String(required=True)
    requested = fields.Integer(required=True)
    available = fields.Integer(required=True)


class ReservationSchema(Schema):
    order_id = fields.String(required=True)
    status = fields.String(
        required=True, metadata={"enum": ["RESERVED", "COMMITTED", "RELEASED", "REJECTED"]}
    )
    items = fields.List(fields.Nested(ReservationLineSchema), required=True)
    shortages = fields.List(fields.Nested(ShortageSchema))
