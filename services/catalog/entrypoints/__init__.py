"""The thin web layer: HTTP in, use case call, HTTP out."""

from .deps import Deps, deps
from .products import products_bp
from .products_v2 import products_v2_bp

__all__ = ["Deps", "deps", "products_bp", "products_v2_bp"]
