"""The thin web layer: HTTP in, use case call, HTTP out."""

from .routes import CACHE_POLICY, SERVICE, routes

__all__ = ["CACHE_POLICY", "SERVICE", "routes"]
