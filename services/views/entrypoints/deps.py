"""What the handlers need, built once by `create_app` (ADR 0023)."""

from __future__ import annotations

from dataclasses import dataclass

from chassis.db import Reader
from chassis.deps import deps_key

from ..service_layer.lag import LagTracker

__all__ = ["DEPS", "Deps"]


@dataclass(frozen=True, slots=True)
class Deps:
    read: Reader
    lag: LagTracker
    max_lag: float


DEPS = deps_key(Deps)
