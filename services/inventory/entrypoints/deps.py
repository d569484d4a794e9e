"""What the handlers need, built once by `create_app` (ADR 0023)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from chassis.deps import deps_key
from chassis.http_cache import CachePolicy
from chassis.retention import Purger

from ..service_layer.services import InventoryService

__all__ = ["DEPS", "Deps"]


@dataclass(frozen=True, slots=True)
class Deps:
    engine: AsyncEngine
    service: InventoryService
    cache_policy: (
        CachePolicy  # stock levels: the same for every reader, shared caches may keep them
    )
    purger: Purger


DEPS = deps_key(Deps)
