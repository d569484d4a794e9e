"""The thin web layer: HTTP in, use case call, HTTP out."""

from .routes import ENGINE, routes

__all__ = ["ENGINE", "routes"]
