"""Marshmallow schemas: request validation, response shapes, and the OpenAPI components.

The value rules come from the domain's check functions, so the API and the entity agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from marshmallow import (
    EXCLUDE,
    RAISE,
    Schema,
    ValidationError,
    fields,
    validate,
    validates_schema,
)

from chassis import BoundedDecimal, BoundedInteger
from chassis.openapi import ProblemSchema
from chassis.pagination import CURSOR_DOC, CURSOR_MESSAGE
from chassis.validation import domain_rule

from .domain import (
    CURRENCY,
    PRICE_DIGITS,
    PRICE_PLACES,
    Product,
    SortKey,
    check_category,
    check_description,
    check_name,
    check_price,
    check_sku,
)
from .domain.model import CATEGORY_PATTERN, MAX_DESCRIPTION, MAX_NAME, SKU_PATTERN
from .service_layer.pagination import InvalidCursor, decode_cursor

__all__ = [
    "MAX_LIMIT",
    "ListQuerySchema",
    "PageSchema",
    "PageV2Schema",
    "PriceSchema",
    "ProblemSchema",
    "ProductInputSchema",
    "ProductSchema",
    "ProductV2Schema",
    "product_document",
    "product_v2_document",
]

DEFAULT_LIMIT = 20
MAX_LIMIT = 100


# The rules as the domain checks them, stated in the document (check_name refuses a name that
# is only whitespace as `str.isspace` sees it: the pattern asks for one character outside it).
_NOT_BLANK = "[^" + "".join(f"\\u{c:04x}" for c in range(0x3001) if chr(c).isspace()) + "]"
_SKU_DOC = {"pattern": SKU_PATTERN, "example": "BK-0001"}
_NAME_DOC = {"pattern": _NOT_BLANK, "maxLength": MAX_NAME, "description": "not blank"}
_DESCRIPTION_DOC = {"maxLength": MAX_DESCRIPTION}
_CATEGORY_DOC = {"pattern": CATEGORY_PATTERN, "example": "books"}

# Prices travel as decimal strings ("12.50"); numbers are accepted on input too.
# Either is bounded (digits, places, ASCII only, no sign or spaces) before it becomes a Decimal.
# A price is 0.00 to MAX_PRICE (1000000.00) with at most 2 places; a filter bound has at most
# PRICE_DIGITS digits and PRICE_PLACES places.
_PRICE_DOC = {
    "type": "string",
    "pattern": r"^(?:[0-9]{1,6}(?:\.[0-9]{1,2})?|1000000(?:\.0{1,2})?)$",
    "example": "12.50",
}
_FILTER_PRICE_DOC = {
    "type": "string",
    "pattern": rf"^[0-9]{{1,{PRICE_DIGITS}}}(?:\.[0-9]{{1,{PRICE_PLACES}}})?$",
    "example": "12.50",
}


class Cursor(fields.String):
    """An opaque cursor in, a SortKey out; anything undecodable is a validation error."""

    def _deserialize(
        self, value: Any, attr: str | None, data: Mapping[str, Any] | None, **kwargs: Any
    ) -> SortKey:
        text = super()._deserialize(value, attr, data, **kwargs)
        try:
            return decode_cursor(text)
        except InvalidCursor as exc:
            raise ValidationError(CURSOR_MESSAGE) from exc


class ProductSchema(Schema):
    """A product as the API returns it; price is a decimal string with 2 places, in EUR."""

    id = fields.String(dump_only=True, metadata={"format": "uuid"})
    sku = fields.String(required=True, metadata={"example": "BK-0001"})
    name = fields.String(required=True)
    description = fields.String()
    category = fields.String(required=True, metadata={"example": "books"})
    price = fields.Decimal(as_string=True, places=2, required=True, metadata=_PRICE_DOC)
    currency = fields.String(dump_only=True, metadata={"enum": [CURRENCY]})
    created_at = fields.AwareDateTime(dump_only=True)
    updated_at = fields.AwareDateTime(dump_only=True)
    version = fields.Integer(dump_only=True)


_CENT = Decimal("0.01")


def product_document(p: Product) -> dict[str, Any]:
    """`ProductSchema().dump(p)`, written out: a product page dumps 20 of these per request,
    and marshmallow's field-by-field walk was a quarter of the list's CPU (issue 17). The
    unit tests hold the two equal."""
    return {
        "id": p.id,
        "sku": p.sku,
        "name": p.name,
        "description": p.description,
        "category": p.category,
        "price": None if p.price is None else format(p.price.quantize(_CENT), "f"),
        "currency": p.currency,
        "created_at": p.created_at.isoformat(),
        "updated_at": p.updated_at.isoformat(),
        "version": p.version,
    }


class PriceSchema(Schema):
    """A price in API v2: the amount as a decimal string with 2 places, and its currency."""

    amount = fields.Decimal(as_string=True, places=2, required=True, metadata=_PRICE_DOC)
    currency = fields.String(required=True, metadata={"enum": [CURRENCY], "example": CURRENCY})


class ProductV2Schema(ProductSchema):
    """A product in API v2: `price` is a `{amount, currency}` object (no top-level currency)."""

    class Meta:
        exclude = ("currency",)

    price = fields.Nested(PriceSchema, required=True)


def product_v2_document(p: Product) -> dict[str, Any]:
    """The v2 representation: v1's fields, with price and currency as one object."""
    doc = product_document(p)
    amount, currency = doc.pop("price"), doc.pop("currency")
    doc["price"] = None if amount is None else {"amount": amount, "currency": currency}
    return doc


class ProductInputSchema(Schema):
    """A product as a client sends it (POST, PUT; PATCH loads it with partial=True)."""

    class Meta:
        unknown = RAISE

    sku = fields.String(required=True, validate=domain_rule(check_sku), metadata=_SKU_DOC)
    name = fields.String(required=True, validate=domain_rule(check_name), metadata=_NAME_DOC)
    description = fields.String(
        load_default="", validate=domain_rule(check_description), metadata=_DESCRIPTION_DOC
    )
    category = fields.String(
        required=True, validate=domain_rule(check_category), metadata=_CATEGORY_DOC
    )
    # A string ("12.50") or a number; more than 2 decimal places is refused, never rounded.
    price = BoundedDecimal(
        digits=PRICE_DIGITS,
        places=PRICE_PLACES,
        required=True,
        validate=domain_rule(check_price),
        metadata=_PRICE_DOC,
    )


class ListQuerySchema(Schema):
    """GET /products query parameters; unknown parameters are ignored."""

    class Meta:
        unknown = EXCLUDE

    limit = BoundedInteger(
        load_default=DEFAULT_LIMIT, validate=validate.Range(1, MAX_LIMIT), metadata={"default": 20}
    )
    cursor = Cursor(metadata=CURSOR_DOC)
    category = fields.String(validate=validate.Length(1, 64))
    q = fields.String(
        validate=validate.Length(1, 200),
        metadata={"description": "case-insensitive substring of the name"},
    )
    min_price = BoundedDecimal(digits=PRICE_DIGITS, places=PRICE_PLACES, metadata=_FILTER_PRICE_DOC)
    sku = fields.String(
        validate=domain_rule(check_sku),
        metadata={**_SKU_DOC, "description": "exact sku (at most one product)"},
    )
    max_price = BoundedDecimal(
        digits=PRICE_DIGITS,
        places=PRICE_PLACES,
        metadata={**_FILTER_PRICE_DOC, "description": "not below min_price"},
    )

    @validates_schema
    def _price_range(self, data: dict[str, Any], **_: Any) -> None:
        low, high = data.get("min_price"), data.get("max_price")
        if low is not None and high is not None and low > high:
            raise ValidationError("must not be below min_price", "max_price")


class PageSchema(Schema):
    items = fields.List(fields.Nested(ProductSchema), required=True)
    next_cursor = fields.String(
        allow_none=True, required=True, metadata={"description": "null on the last page"}
    )


class PageV2Schema(Schema):
    items = fields.List(fields.Nested(ProductV2Schema), required=True)
    next_cursor = fields.String(
        allow_none=True, required=True, metadata={"description": "null on the last page"}
    )
