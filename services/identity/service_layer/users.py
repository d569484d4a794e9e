"""Registering users (throttled per client address) and checking their passwords (throttled
per username + address).

Functions take a user repository (`SqlUserRepository(session)`, which never commits: the
caller owns the transaction; or `MemoryUserRepository()` in unit tests).
"""

from __future__ import annotations

import time
import uuid

from ..adapters.orm import User
from ..adapters.repository import AbstractUserRepository, DuplicateUsername
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


def find_user(users: AbstractUserRepository, username: str) -> User | None:
    return users.find(normalize(username))


def register(
    users: AbstractUserRepository,
    passwords: Passwords,
    *,
    username: str,
    email: str,
    password: str,
    role: Role = Role.CUSTOMER,
) -> User:
    """Self-registration keeps the default role; only the command line passes another."""
    name = normalize(username)
    if users.find(name) is not None:
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
        users.add(user)
    except DuplicateUsername as exc:  # a concurrent registration of the same name won
        raise UsernameTaken(name) from exc
    return user


def admit_registration(
    users: AbstractUserRepository, throttle: Throttle, *, ip: str, now: float | None = None
) -> None:
    """Count one registration attempt from `ip`, or raise RegistrationThrottled (not counted).
    Every admitted attempt counts, a taken username (409) included: that answer tells whether
    an account exists, which is what an enumeration wants to learn.
    """
    now = time.time() if now is None else now
    ip = ip[:64]  # the column's width (a forwarded address is whatever the proxy wrote)
    attempts = users.registration_attempts(ip, since=now - throttle.window)
    retry_after = throttle.retry_after(attempts, now)
    if retry_after:
        raise RegistrationThrottled(retry_after)
    users.add_registration_attempt(ip, now)


def authenticate(
    users: AbstractUserRepository,
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
    failures = users.login_failures(name, ip, since=now - throttle.window)
    retry_after = throttle.retry_after(failures, now)
    if retry_after:
        raise LoginThrottled(retry_after)
    user = users.find(name)
    if not passwords.verify(user.password_hash if user else None, password) or user is None:
        users.add_login_failure(name, ip, now)
        raise InvalidCredentials(name)
    users.clear_login_failures(name, ip)
    if passwords.needs_rehash(user.password_hash):
        user.password_hash = passwords.hash(password)
    return user
