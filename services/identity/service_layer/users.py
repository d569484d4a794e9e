"""Registering users (throttled per client address) and checking their passwords (throttled
per username + address).

Functions take an open SQLAlchemy session and never commit: the caller owns the transaction.
"""

from __future__ import annotations

import time
import uuid

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ..adapters.orm import LoginFailure, RegistrationAttempt, User
from ..domain.passwords import Passwords
from ..domain.roles import Role
from ..domain.throttle import Throttle

__all__ = [
    "InvalidCredentials",
    "LoginThrottled",
    "RegistrationThrottled",
    "UsernameTaken",
    "admit_registration",
    "authenticate",
    "find_user",
    "register",
]


class UsernameTaken(Exception):
    pass


class InvalidCredentials(Exception):
    pass


class LoginThrottled(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many failed logins; retry after {retry_after} s")
        self.retry_after = retry_after


class RegistrationThrottled(Exception):
    def __init__(self, retry_after: int) -> None:
        super().__init__(f"too many registrations; retry after {retry_after} s")
        self.retry_after = retry_after


def normalize(username: str) -> str:
    return username.strip().lower()


def find_user(session: Session, username: str) -> User | None:
    return session.scalars(select(User).where(User.username == normalize(username))).first()


def register(
    session: Session,
    passwords: Passwords,
    *,
    username: str,
    email: str,
    password: str,
    role: Role = Role.CUSTOMER,
) -> User:
    """Self-registration keeps the default role; only the command line passes another."""
    name = normalize(username)
    if find_user(session, name) is not None:
        raise UsernameTaken(name)
    user = User(
        id=uuid.uuid4().hex,
        username=name,
        email=email,
        password_hash=passwords.hash(password),
        role=Role(role).value,
        created_at=time.time(),
    )
    try:
        with session.begin_nested():  # a concurrent registration of the same name loses here
            session.add(user)
    except IntegrityError as exc:
        raise UsernameTaken(name) from exc
    return user


def admit_registration(
    session: Session, throttle: Throttle, *, ip: str, now: float | None = None
) -> None:
    """Count one registration attempt from `ip`, or raise RegistrationThrottled (not counted).
    Every admitted attempt counts, a taken username (409) included: that answer tells whether
    an account exists, which is what an enumeration wants to learn.
    """
    now = time.time() if now is None else now
    ip = ip[:64]  # the column's width (a forwarded address is whatever the proxy wrote)
    key = RegistrationAttempt.ip == ip
    session.execute(
        delete(RegistrationAttempt).where(key, RegistrationAttempt.at <= now - throttle.window)
    )
    attempts = session.scalars(select(RegistrationAttempt.at).where(key)).all()
    retry_after = throttle.retry_after(attempts, now)
    if retry_after:
        raise RegistrationThrottled(retry_after)
    session.add(RegistrationAttempt(ip=ip, at=now))


def authenticate(
    session: Session,
    passwords: Passwords,
    throttle: Throttle,
    *,
    username: str,
    password: str,
    ip: str,
    now: float | None = None,
) -> User:
    """The user, or InvalidCredentials (failure recorded), or LoginThrottled (not even checked)."""
    now = time.time() if now is None else now
    name = normalize(username)[:64]
    key = (LoginFailure.username == name, LoginFailure.ip == ip)
    session.execute(delete(LoginFailure).where(*key, LoginFailure.at <= now - throttle.window))
    failures = session.scalars(select(LoginFailure.at).where(*key)).all()
    retry_after = throttle.retry_after(failures, now)
    if retry_after:
        raise LoginThrottled(retry_after)
    user = find_user(session, name)
    if not passwords.verify(user.password_hash if user else None, password) or user is None:
        session.add(LoginFailure(username=name, ip=ip, at=now))
        raise InvalidCredentials(name)
    session.execute(delete(LoginFailure).where(*key))
    if passwords.needs_rehash(user.password_hash):
        user.password_hash = passwords.hash(password)
    return user
