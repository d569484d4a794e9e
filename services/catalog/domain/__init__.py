"""The catalog's domain: plain classes and value checks, no Flask or ORM imports."""

from .events import ProductCreated, ProductDeleted, ProductEvent, ProductUpdated
from .model import (
    CURRENCY,
    PRICE_DIGITS,
    PRICE_PLACES,
    InvalidProduct,
    Product,
    SortKey,
    check_category,
    check_description,
    check_name,
    check_price,
    check_sku,
)

__all__ = [
    "CURRENCY",
    "PRICE_DIGITS",
    "PRICE_PLACES",
    "InvalidProduct",
    "Product",
    "ProductCreated",
    "ProductDeleted",
    "ProductEvent",
    "ProductUpdated",
    "SortKey",
    "check_category",
    "check_description",
    "check_name",
    "check_price",
    "check_sku",
]
