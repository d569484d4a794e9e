"""The signing key ring: which key signs now, which keys are published, when old keys go.

Rotation never lets a verifier meet a `kid` it cannot find: a new key is published at once but
signs only from `activates_at` (later than the verifiers' JWKS refetch interval), and a retired
key stays published until every token it signed has expired (`retired_at` + token TTL + a
margin for the verifiers' clock leeway), after which it is pruned.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

__all__ = ["EXPIRY_MARGIN", "KeyRing", "NoSigningKey", "SigningKey"]

# Verifiers accept tokens up to 30 s past `exp` (chassis TokenPolicy.leeway); keep keys longer.
EXPIRY_MARGIN = 60.0


class NoSigningKey(RuntimeError):
    """No key is active yet: run `python -m services.identity init`."""


@dataclass(frozen=True)
class SigningKey:
    kid: str
    jwk: dict[str, Any]  # the private JWK; never published
    created_at: float
    activates_at: float
    retired_at: float | None = None

    def public_jwk(self) -> dict[str, Any]:
        public = {k: self.jwk[k] for k in ("kty", "n", "e", "crv", "x", "y") if k in self.jwk}
        return {**public, "kid": self.kid, "use": "sig", "alg": self.jwk.get("alg", "RS256")}

    def expired(self, now: float, token_ttl: float) -> bool:
        return self.retired_at is not None and self.retired_at + token_ttl + EXPIRY_MARGIN <= now


@dataclass(frozen=True)
class KeyRing:
    keys: tuple[SigningKey, ...] = ()

    def signing_key(self, now: float) -> SigningKey:
        """The most recently activated key."""
        active = [k for k in self.keys if k.activates_at <= now]
        if not active:
            raise NoSigningKey("no signing key is active")
        return max(active, key=lambda k: (k.activates_at, k.created_at))

    def published(self, now: float, token_ttl: float) -> list[SigningKey]:
        """Pending, active and retired-but-still-needed keys."""
        return [k for k in self.keys if not k.expired(now, token_ttl)]

    def rotate(self, new: SigningKey, now: float, token_ttl: float) -> KeyRing:
        """Add `new`; every key not yet retired stops signing when `new` starts."""
        kept = [
            k if k.retired_at is not None else dataclasses.replace(k, retired_at=new.activates_at)
            for k in self.keys
            if not k.expired(now, token_ttl)
        ]
        return KeyRing((*kept, new))

    def pruned(self, now: float, token_ttl: float) -> KeyRing:
        return KeyRing(tuple(self.published(now, token_ttl)))
