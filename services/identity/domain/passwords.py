"""Password hashing with argon2id (argon2-cffi), and fast hashes for high-entropy secrets.

User passwords are low-entropy, so they get a deliberately slow, memory-hard hash. Client
secrets, refresh tokens and authorization codes are 256-bit random strings: brute force is
hopeless whatever the hash, so a plain SHA-256 keeps the token endpoint fast under load.
"""

from __future__ import annotations

import functools
import hashlib
import hmac

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

__all__ = ["Passwords", "secret_digest", "secret_matches"]


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
