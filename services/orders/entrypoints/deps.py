"""What the handlers need, built once by `create_app` (ADR 0023)."""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy.ext.asyncio import AsyncEngine

from chassis.deps import deps_key
from chassis.retention import Purger

from ..adapters.upstreams import Upstreams
from ..service_layer.saga import SagaDriver
from ..service_layer.unit_of_work import UnitOfWorkFactory

__all__ = ["DEPS", "Deps", "Started"]


@dataclass(slots=True)
class Started:
    """What exists only while the app runs, set and cleared by create_app's cleanup context:
    the upstream clients (their HTTP session needs the loop) and the saga driver."""

    upstreams: Upstreams | None = None
    driver: SagaDriver | None = None


@dataclass(frozen=True, slots=True)
class Deps:
    engine: AsyncEngine
    uow: UnitOfWorkFactory
    purger: Purger
    started: Started = field(default_factory=Started)
    reads: UnitOfWorkFactory | None = None  # a read unit (no transaction); None: `uow`


DEPS = deps_key(Deps)
