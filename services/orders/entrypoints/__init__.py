"""The thin web layer: HTTP in, use case call, HTTP out."""

from .routes import RUNTIME, Runtime, routes

__all__ = ["RUNTIME", "Runtime", "routes"]
