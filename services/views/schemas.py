"""Marshmallow schemas: response shapes, query parameters, and the OpenAPI components."""

from __future__ import annotations

from typing import Any

from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate, validates_schema

from chassis import BoundedInteger
from chassis.pagination import CURSOR_DOC

__all__ = [
    "MAX_REPORT_DAYS",
    "MyOrderPageSchema",
    "MyOrderSchema",
    "MyOrdersQuerySchema",
    "RecommendationsQuerySchema",
    "RecommendationsSchema",
    "SalesQuerySchema",
    "SalesReportSchema",
]

MAX_REPORT_DAYS = 366
_MONEY = {"pattern": r"^-?\d+\.\d{2}$", "example": "19.98"}


class LineSchema(Schema):
    sku = fields.String()
    quantity = fields.Integer()
    unit_price = fields.String(allow_none=True, metadata={**_MONEY, "nullable": True})


class MyOrderSchema(Schema):
    id = fields.String()
    status = fields.String(metadata={"enum": ["PENDING", "CONFIRMED", "REJECTED"]})
    total = fields.String(allow_none=True, metadata={**_MONEY, "nullable": True})
    currency = fields.String(metadata={"example": "EUR"})
    payment_state = fields.String(
        metadata={"enum": ["pending", "captured", "declined", "refunded"]}
    )
    notifications = fields.Integer(metadata={"description": "notifications sent about it"})
    items = fields.List(fields.Nested(LineSchema))
    created_at = fields.AwareDateTime()
    updated_at = fields.AwareDateTime()


class MyOrderPageSchema(Schema):
    items = fields.List(fields.Nested(MyOrderSchema), required=True)
    next_cursor = fields.String(
        allow_none=True, required=True, metadata={"description": "null on the last page"}
    )


class MyOrdersQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    limit = BoundedInteger(load_default=20, validate=validate.Range(1, 100))
    cursor = fields.String(metadata=CURSOR_DOC)


class SalesQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    from_ = fields.Date(
        required=True, data_key="from", metadata={"description": "first day (UTC), inclusive"}
    )
    to = fields.Date(required=True, metadata={"description": "last day (UTC), inclusive"})
    limit = BoundedInteger(load_default=500, validate=validate.Range(1, 1000))
    cursor = fields.String(metadata=CURSOR_DOC)

    @validates_schema
    def _range(self, data: dict[str, Any], **_: Any) -> None:
        first, last = data.get("from_"), data.get("to")
        if first is None or last is None:
            return
        if last < first:
            raise ValidationError("must not be before from", "to")
        if (last - first).days >= MAX_REPORT_DAYS:
            raise ValidationError(f"the range may span at most {MAX_REPORT_DAYS} days", "to")


class SalesRowSchema(Schema):
    day = fields.Date()
    sku = fields.String()
    currency = fields.String()
    units = fields.Integer()
    revenue = fields.String(metadata=_MONEY)


class SalesTotalSchema(Schema):
    currency = fields.String()
    units = fields.Integer()
    revenue = fields.String(metadata=_MONEY)


class SalesReportSchema(Schema):
    from_ = fields.Date(data_key="from")
    to = fields.Date()
    items = fields.List(fields.Nested(SalesRowSchema), required=True)
    totals = fields.List(
        fields.Nested(SalesTotalSchema),
        metadata={"description": "over the whole range, per currency"},
    )
    next_cursor = fields.String(
        allow_none=True, required=True, metadata={"description": "null on the last page"}
    )


class RecommendationsQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    limit = BoundedInteger(load_default=10, validate=validate.Range(1, 50))


class RecommendationSchema(Schema):
    product_id = fields.String(
        allow_none=True, metadata={"nullable": True, "description": "null: not in the catalog"}
    )
    sku = fields.String()
    orders = fields.Integer(metadata={"description": "confirmed orders with both products"})


class RecommendationsSchema(Schema):
    product_id = fields.String()
    sku = fields.String()
    items = fields.List(fields.Nested(RecommendationSchema), required=True)
