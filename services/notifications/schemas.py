"""Marshmallow schemas: response shapes, query parameters, and the OpenAPI components."""

from __future__ import annotations

from marshmallow import EXCLUDE, Schema, fields, validate

from chassis import BoundedInteger
from chassis.pagination import CURSOR_DOC

__all__ = ["ListQuerySchema", "NotificationPageSchema", "NotificationSchema"]


class NotificationSchema(Schema):
    id = fields.String(metadata={"format": "uuid"})
    kind = fields.String(metadata={"enum": ["order", "payment"]})
    event_type = fields.String(metadata={"example": "order.confirmed"})
    order_id = fields.String(allow_none=True, metadata={"nullable": True})
    subject = fields.String()
    body = fields.String()
    created_at = fields.AwareDateTime()
    read = fields.Boolean()
    read_at = fields.AwareDateTime(allow_none=True, metadata={"nullable": True})


class NotificationPageSchema(Schema):
    items = fields.List(fields.Nested(NotificationSchema), required=True)
    next_cursor = fields.String(
        allow_none=True, required=True, metadata={"description": "null on the last page"}
    )


class ListQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    limit = BoundedInteger(load_default=20, validate=validate.Range(1, 100))
    cursor = fields.String(metadata=CURSOR_DOC)
    unread = fields.Boolean(metadata={"description": "true: unread only; false: read only"})
