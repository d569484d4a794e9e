"""The thin web layer: HTTP in, use case call, HTTP out."""

from .routes import SERVICE, routes

__all__ = ["SERVICE", "routes"]
