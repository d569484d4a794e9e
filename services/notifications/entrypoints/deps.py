"""What the handlers need, built once by `create_app` (ADR 0023)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from chassis.deps import deps_key
from chassis.retention import Purger

from ..service_layer.live import LiveHub
from ..service_layer.unit_of_work import AbstractUnitOfWork

__all__ = ["DEPS", "Deps"]


@dataclass(frozen=True, slots=True)
class Deps:
    engine: AsyncEngine
    uow: Callable[[], AbstractUnitOfWork]
    purger: Purger
    live: LiveHub  # open streams, woken by the event consumer (ADR 0035)


DEPS = deps_key(Deps)
