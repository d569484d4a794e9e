"""The thin web layer: HTTP in, use case call, HTTP out."""

from .payments import SERVICE, payments_bp

__all__ = ["SERVICE", "payments_bp"]
