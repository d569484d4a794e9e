"""Users and their throttling rows behind one interface, for the use cases in
`service_layer/users.py`: SQL on the request's session here, in memory in `memory.py`.

The SQL repository never commits: the caller owns the transaction (the request's session).
"""

from __future__ import annotations

import abc

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .orm import LoginFailure, RegistrationAttempt, User

__all__ = ["AbstractUserRepository", "DuplicateUsername", "SqlUserRepository"]


class DuplicateUsername(Exception):
    """The username is taken (a concurrent registration may have just taken it)."""


class AbstractUserRepository(abc.ABC):
    @abc.abstractmethod
    def find(self, username: str) -> User | None:
        """The user with this (normalized) username."""

    @abc.abstractmethod
    def add(self, user: User) -> None:
        """Store a new user; raises DuplicateUsername."""

    @abc.abstractmethod
    def registration_attempts(self, ip: str, since: float) -> list[float]:
        """When `ip` registered after `since`; older attempts are forgotten."""

    @abc.abstractmethod
    def add_registration_attempt(self, ip: str, at: float) -> None: ...

    @abc.abstractmethod
    def login_failures(self, username: str, ip: str, since: float) -> list[float]:
        """When logins as `username` from `ip` failed after `since`; older ones are forgotten."""

    @abc.abstractmethod
    def add_login_failure(self, username: str, ip: str, at: float) -> None: ...

    @abc.abstractmethod
    def clear_login_failures(self, username: str, ip: str) -> None: ...


class SqlUserRepository(AbstractUserRepository):
    def __init__(self, session: Session) -> None:
        self.session = session

    def find(self, username: str) -> User | None:
        return self.session.scalars(select(User).where(User.username == username)).first()

    def add(self, user: User) -> None:
        try:
            with self.session.begin_nested():  # a concurrent registration of the name loses here
                self.session.add(user)
        except IntegrityError as exc:
            raise DuplicateUsername(user.username) from exc

    def registration_attempts(self, ip: str, since: float) -> list[float]:
        key = RegistrationAttempt.ip == ip
        self.session.execute(
            delete(RegistrationAttempt).where(key, RegistrationAttempt.at <= since)
        )
        return list(self.session.scalars(select(RegistrationAttempt.at).where(key)).all())

    def add_registration_attempt(self, ip: str, at: float) -> None:
        self.session.add(RegistrationAttempt(ip=ip, at=at))

    def login_failures(self, username: str, ip: str, since: float) -> list[float]:
        key = (LoginFailure.username == username, LoginFailure.ip == ip)
        self.session.execute(delete(LoginFailure).where(*key, LoginFailure.at <= since))
        return list(self.session.scalars(select(LoginFailure.at).where(*key)).all())

    def add_login_failure(self, username: str, ip: str, at: float) -> None:
        self.session.add(LoginFailure(username=username, ip=ip, at=at))

    def clear_login_failures(self, username: str, ip: str) -> None:
        self.session.execute(
            delete(LoginFailure).where(LoginFailure.username == username, LoginFailure.ip == ip)
        )
