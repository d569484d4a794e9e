"""The thin web layer: HTTP in, use case call, HTTP out."""

from . import streams as _streams  # noqa: F401 - registers the live routes on `routes`
from .deps import DEPS, Deps
from .routes import routes

__all__ = ["DEPS", "Deps", "routes"]
