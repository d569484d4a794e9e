"""The thin web layer: HTTP in, use case call, HTTP out."""

from .products import CACHE_POLICY, READ_UOW_FACTORY, UOW_FACTORY, products_bp

__all__ = [
    "CACHE_POLICY",
    "READ_UOW_FACTORY",
    "UOW_FACTORY",
    "products_bp",
]
