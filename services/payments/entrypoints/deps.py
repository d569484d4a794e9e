"""What the blueprint needs, built once by `create_app` (ADR 0023)."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask
from sqlalchemy import Engine

from chassis.deps import dependencies
from chassis.messaging import RelayHandle
from chassis.retention import Purger

from ..service_layer.services import PaymentService

__all__ = ["Deps", "deps"]


@dataclass(frozen=True, slots=True)
class Deps:
    engine: Engine
    service: PaymentService
    purger: Purger
    relay: RelayHandle | None = None


def deps(app: Flask | None = None) -> Deps:
    return dependencies(Deps, app)
