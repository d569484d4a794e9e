"""In-memory users and throttling rows with the SQL repository's behaviour, for fast
use-case tests (no database, no session)."""

from __future__ import annotations

from dataclasses import dataclass, field

from .orm import User
from .repository import AbstractUserRepository, DuplicateUsername

__all__ = ["MemoryUserRepository"]


@dataclass
class MemoryUserRepository(AbstractUserRepository):
    users: dict[str, User] = field(default_factory=dict)  # by username
    registrations: list[tuple[str, float]] = field(default_factory=list)  # (ip, at)
    failures: list[tuple[str, str, float]] = field(default_factory=list)  # (username, ip, at)

    def find(self, username: str) -> User | None:
        return self.users.get(username)

    def add(self, user: User) -> None:
        if user.username in self.users:
            raise DuplicateUsername(user.username)
        self.users[user.username] = user

    def registration_attempts(self, ip: str, since: float) -> list[float]:
        self.registrations = [(i, at) for i, at in self.registrations if i != ip or at > since]
        return [at for i, at in self.registrations if i == ip]

    def add_registration_attempt(self, ip: str, at: float) -> None:
        self.registrations.append((ip, at))

    def login_failures(self, username: str, ip: str, since: float) -> list[float]:
        key = (username, ip)
        self.failures = [f for f in self.failures if f[:2] != key or f[2] > since]
        return [at for u, i, at in self.failures if (u, i) == key]

    def add_login_failure(self, username: str, ip: str, at: float) -> None:
        self.failures.append((username, ip, at))

    def clear_login_failures(self, username: str, ip: str) -> None:
        self.failures = [f for f in self.failures if f[:2] != (username, ip)]
