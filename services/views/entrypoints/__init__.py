"""The thin web layer: HTTP in, a read model query, HTTP out."""

from .deps import DEPS, Deps
from .routes import routes

__all__ = ["DEPS", "Deps", "routes"]
