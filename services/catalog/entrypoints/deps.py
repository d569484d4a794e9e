"""What the blueprint needs, built once by `create_app` (ADR 0023)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from flask import Flask
from sqlalchemy import Engine

from chassis.deps import dependencies
from chassis.flags import FlagStore
from chassis.http_cache import CachePolicy
from chassis.messaging import RelayHandle
from chassis.retention import Purger

from ..adapters.cache import ProductCache
from ..service_layer.unit_of_work import AbstractUnitOfWork

__all__ = ["Deps", "deps"]


@dataclass(frozen=True, slots=True)
class Deps:
    engine: Engine
    uow: Callable[[], AbstractUnitOfWork]  # writes: they invalidate the product cache
    read_uow: Callable[[], AbstractUnitOfWork]  # reads: through the product cache, if any
    cache_policy: CachePolicy
    cache: ProductCache | None
    purger: Purger
    relay: RelayHandle | None = None
    flags: FlagStore = field(default_factory=lambda: FlagStore(None))  # no file: all off


def deps(app: Flask | None = None) -> Deps:
    return dependencies(Deps, app)
