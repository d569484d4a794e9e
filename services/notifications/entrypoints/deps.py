"""What the handlers need, built once by `create_app` (ADR 0023)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncEngine

from chassis.deps import deps_key
from chassis.retention import Purger

__all__ = ["DEPS", "Deps"]


@dataclass(frozen=True, slots=True)
class Deps:
    engine: AsyncEngine
    purger: Purger


DEPS = deps_key(Deps)
