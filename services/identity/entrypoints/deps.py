"""What the blueprints need, built once by `create_app` (ADR 0023); the request's session."""

from __future__ import annotations

from dataclasses import dataclass

from flask import Flask, g
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from chassis.deps import dependencies

from ..adapters.keystore import KeyStore
from ..adapters.oauth2 import PorticoAuthorizationServer
from ..domain.passwords import PasswordPolicy, Passwords
from ..domain.throttle import Throttle
from ..settings import IdentitySettings

__all__ = ["Deps", "db", "deps"]


@dataclass(frozen=True, slots=True)
class Deps:
    settings: IdentitySettings
    engine: Engine
    sessions: sessionmaker[Session]
    keystore: KeyStore
    passwords: Passwords
    throttle: Throttle
    server: PorticoAuthorizationServer
    password_policy: PasswordPolicy
    registrations: Throttle


def deps(app: Flask | None = None) -> Deps:
    return dependencies(Deps, app)


def db() -> Session:
    """The request's session, opened on first use and closed (rolled back unless committed)
    when the app context ends.
    """
    if "db" not in g:
        g.db = deps().sessions()
    return g.db  # type: ignore[no-any-return]
