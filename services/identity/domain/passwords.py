"""Password hashing with argon2id (argon2-cffi), fast hashes for high-entropy secrets, and the
policy self-registration applies to new passwords.

User passwords are low-entropy, so they get a deliberately slow, memory-hard hash. Client
secrets, refresh tokens and authorization codes are 256-bit random strings: brute force is
hopeless whatever the hash, so a plain SHA-256 keeps the token endpoint fast under load.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Iterable
from dataclasses import dataclass, field

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

__all__ = ["PasswordPolicy", "Passwords", "secret_digest", "secret_matches"]


class Passwords:
    """argon2id hashing with a constant-time answer for unknown users."""

    def __init__(self, hasher: PasswordHasher | None = None) -> None:
        self._hasher = hasher or PasswordHasher()

    @functools.cached_property
    def _dummy(self) -> str:
        # Verifying against this when the user does not exist costs the same time as a real
        # check, so response times do not tell which usernames exist.
        return self._hasher.hash("portico-no-such-user")

    def hash(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify(self, stored: str | None, password: str) -> bool:
        try:
            return self._hasher.verify(stored or self._dummy, password) and stored is not None
        except (VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored: str) -> bool:
        return self._hasher.check_needs_rehash(stored)


def secret_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def secret_matches(stored_digest: str | None, secret: str) -> bool:
    if not stored_digest:
        return False
    return hmac.compare_digest(stored_digest, secret_digest(secret))


@dataclass(frozen=True)
class PasswordPolicy:
    """What a new password must not be, beyond the length the schema checks: one of the most
    common passwords (the first guesses of any credential-stuffing run, compared lower-cased
    as Django does), or the username or the e-mail's local part, or contain either of them.
    An identifier shorter than `min_identifier` is refused only verbatim, so that a two-letter
    local part does not forbid every password holding those two letters.
    """

    common: frozenset[str] = field(default_factory=frozenset, repr=False)
    min_identifier: int = 3

    @classmethod
    def from_lines(cls, lines: Iterable[str]) -> PasswordPolicy:
        return cls(frozenset(w for w in (line.strip().lower() for line in lines) if w))

    def problems(self, password: str, *, username: str, email: str) -> list[str]:
        """Why `password` is refused (empty: it is accepted); each reason reads after "the
        password".
        """
        lowered = password.strip().lower()
        reasons = []
        if lowered in self.common:
            reasons.append("is one of the most commonly used passwords")
        local_part = email.rpartition("@")[0] if "@" in email else email
        for label, value in (("username", username), ("e-mail address", local_part)):
            name = value.strip().lower()
            if name and (lowered == name or (len(name) >= self.min_identifier and name in lowered)):
                reasons.append(f"contains the {label}")
        return reasons
