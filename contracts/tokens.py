"""A throwaway token issuer for tests: an RSA key, its JWKS, and RFC 9068 access tokens.

Packaged (here, beside its first packaged user, the contract runner) because packaged code
never imports `tests`; the tests import it as `tests.support.tokens`. Shared by the contract
runner and the services' and the gateway's tests::

    issuer = TestIssuer()
    app = create_app(settings, verifier=issuer.verifier())
    client.get("/x", headers=issuer.auth(scopes=["catalog:read"]))
    issuer.token(scopes=[], exp=0)                 # override (or, with None, drop) a claim
    issuer.token(headers={"typ": "JWT"})           # override a header field
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from chassis.tokens import AsyncTokenVerifier, TokenPolicy, TokenVerifier

__all__ = ["TestIssuer"]


class TestIssuer:
    """Mints tokens the chassis verifiers accept (and, with overrides, ones they must refuse)."""

    __test__ = False  # not a test class, whatever its name

    def __init__(
        self,
        issuer: str = "https://issuer.test",
        audience: str = "portico-api",
        *,
        kid: str | None = None,
        lifetime: int = 300,
    ) -> None:
        self.issuer = issuer
        self.audience = audience
        self.kid = kid or uuid.uuid4().hex[:16]
        self.lifetime = lifetime
        self.private_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def public_jwk(self) -> dict[str, Any]:
        jwk: dict[str, Any] = json.loads(
            jwt.algorithms.RSAAlgorithm.to_jwk(self.private_key.public_key())
        )
        jwk.update(kid=self.kid, use="sig", alg="RS256")
        return jwk

    def jwks(self) -> dict[str, Any]:
        return {"keys": [self.public_jwk()]}

    def policy(self) -> TokenPolicy:
        return TokenPolicy(issuer=self.issuer, audience=self.audience)

    def verifier(self, **kwargs: Any) -> TokenVerifier:
        return TokenVerifier(self.policy(), fetch_jwks=self.jwks, **kwargs)

    def async_verifier(self, **kwargs: Any) -> AsyncTokenVerifier:
        async def fetch() -> dict[str, Any]:
            return self.jwks()

        return AsyncTokenVerifier(self.policy(), fetch, **kwargs)

    def token(
        self,
        scopes: Iterable[str] = (),
        sub: str = "test-client",
        *,
        headers: dict[str, Any] | None = None,
        **claim_overrides: Any,
    ) -> str:
        """A signed access token; a claim override of None removes that claim."""
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": sub,
            "client_id": sub,
            "scope": " ".join(scopes),
            "iat": now,
            "exp": now + self.lifetime,
            "jti": uuid.uuid4().hex,
        }
        claims.update(claim_overrides)
        claims = {k: v for k, v in claims.items() if v is not None}
        header = {"typ": "at+jwt", "kid": self.kid, **(headers or {})}
        return jwt.encode(claims, self.private_key, algorithm="RS256", headers=header)

    def auth(
        self, scopes: Iterable[str] = (), sub: str = "test-client", **kw: Any
    ) -> dict[str, str]:
        """An `Authorization` header carrying a fresh token."""
        return {"Authorization": f"Bearer {self.token(scopes, sub, **kw)}"}
