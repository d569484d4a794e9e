"""The thin web layer: HTTP in, use case call, HTTP out."""

from .deps import DEPS, Deps
from .routes import routes

__all__ = ["DEPS", "Deps", "routes"]
