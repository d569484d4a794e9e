"""The catalog's domain: plain classes and value checks, no Flask or ORM imports."""

from .model import (
    CURRENCY,
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
    "InvalidProduct",
    "Product",
    "SortKey",
    "check_category",
    "check_description",
    "check_name",
    "check_price",
    "check_sku",
]
