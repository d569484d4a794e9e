"""The thin web layer: HTTP in, use case call, HTTP out."""

from .deps import Deps, deps
from .payments import payments_bp

__all__ = ["Deps", "deps", "payments_bp"]
