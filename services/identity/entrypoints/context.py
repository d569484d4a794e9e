"""What the blueprints need, built once by `create_app` and kept in `app.extensions`."""

from __future__ import annotations

from dataclasses import dataclass

from flask import current_app, g
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from ..adapters.keystore import KeyStore
from ..adapters.oauth2 import PorticoAuthorizationServer
from ..domain.passwords import PasswordPolicy, Passwords
from ..domain.throttle import Throttle
from ..settings import IdentitySettings

__all__ = ["EXTENSION", "Identity", "db", "identity"]

EXTENSION = "portico.identity"


@dataclass
class Identity:
    settings: IdentitySettings
    engine: Engine
    sessions: sessionmaker[Session]
    keystore: KeyStore
    passwords: Passwords
    throttle: Throttle
    server: PorticoAuthorizationServer
    password_policy: PasswordPolicy
    registrations: Throttle


def identity() -> Identity:
    return current_app.extensions[EXTENSION]  # type: ignore[no-any-return]


def db() -> Session:
    """The request's session, opened on first use and closed (rolled back unless committed)
    when the app context ends.
    """
    if "db" not in g:
        g.db = identity().sessions()
    return g.db  # type: ignore[no-any-return]
