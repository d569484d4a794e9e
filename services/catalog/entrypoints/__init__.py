"""The thin web layer: HTTP in, use case call, HTTP out."""

from .openapi import install_spec, openapi_bp
from .products import CACHE_POLICY, READ_UOW_FACTORY, UOW_FACTORY, products_bp

__all__ = [
    "CACHE_POLICY",
    "READ_UOW_FACTORY",
    "UOW_FACTORY",
    "install_spec",
    "openapi_bp",
    "products_bp",
]
