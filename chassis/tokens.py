"""Access-token checks shared by the gateway and every service (defence in depth).

Tokens are RFC 9068 JWTs verified locally against the issuer's JWKS:

* algorithms are pinned (`none` and HMAC are never accepted, so an HS256 token "signed" with
  the public key fails), and a key is only used with the algorithm family of its own type;
* `typ` must be `at+jwt`; `iss`, `aud`, `exp`, `nbf` are checked with a small leeway;
* an unknown `kid` triggers at most one JWKS refetch per `refetch_interval`, shared by all
  concurrent callers, so forged kids cannot cause a refetch storm;
* verified tokens are cached (bounded) and never served past their `exp`.

Exceptions::

    TokenError (401, error="invalid_token")
     +-- MissingToken (401, no error code, per RFC 6750 section 3.1)
     +-- InsufficientScope (403, error="insufficient_scope")
     +-- KeysUnavailable (503: the JWKS could not be fetched, the token is not judged)
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jwt

from .problems import Problem
from .settings import from_env

__all__ = [
    "AsyncTokenVerifier",
    "Claims",
    "InsufficientScope",
    "KeysUnavailable",
    "MissingToken",
    "TokenError",
    "TokenPolicy",
    "TokenSettings",
    "TokenVerifier",
    "bearer_token",
    "fetch_jwks_sync",
    "token_problem",
]

_ALLOWED_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "ES256", "ES384"})
_KTY_FOR_ALG = {"RS": "RSA", "PS": "RSA", "ES": "EC"}
_TYP = frozenset({"at+jwt", "application/at+jwt"})


class TokenError(Exception):
    status = 401
    error: str | None = "invalid_token"

    def __init__(self, description: str, scope: str | None = None) -> None:
        super().__init__(description)
        self.description = description
        self.scope = scope


class MissingToken(TokenError):
    error = None


class InsufficientScope(TokenError):
    status = 403
    error = "insufficient_scope"


class KeysUnavailable(TokenError):
    """The issuer's JWKS could not be fetched: the token may be fine, we cannot tell (503)."""

    status = 503
    error = None


@dataclass(frozen=True)
class TokenPolicy:
    issuer: str
    audience: str
    algorithms: tuple[str, ...] = ("RS256", "ES256")
    leeway: int = 30

    def __post_init__(self) -> None:
        bad = set(self.algorithms) - _ALLOWED_ALGS
        if bad:
            raise ValueError(f"algorithms not allowed for access tokens: {sorted(bad)}")


@dataclass(frozen=True)
class TokenSettings:
    """Who issues the tokens every part of Portico accepts; the same variables everywhere."""

    issuer: str = field(default="http://127.0.0.1:8080", metadata={"env": "PORTICO_ISSUER"})
    audience: str = field(default="portico-api", metadata={"env": "PORTICO_AUDIENCE"})
    jwks_url: str = field(
        default="http://127.0.0.1:8101/.well-known/jwks.json", metadata={"env": "PORTICO_JWKS_URL"}
    )
    jwks_refetch_interval: float = field(
        default=10.0, metadata={"env": "PORTICO_JWKS_REFETCH_INTERVAL"}
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> TokenSettings:
        return from_env(cls, "PORTICO_", environ)

    def policy(self) -> TokenPolicy:
        return TokenPolicy(issuer=self.issuer, audience=self.audience)

    def sync_verifier(self) -> TokenVerifier:
        url = self.jwks_url
        return TokenVerifier(
            self.policy(),
            lambda: fetch_jwks_sync(url),
            refetch_interval=self.jwks_refetch_interval,
        )

    def async_verifier(self) -> AsyncTokenVerifier:
        """For aiohttp services: the blocking JWKS fetch runs in a worker thread, so no
        client session has to be opened and closed with the app."""
        url = self.jwks_url

        async def fetch() -> dict[str, Any]:
            return await asyncio.to_thread(fetch_jwks_sync, url)

        return AsyncTokenVerifier(self.policy(), fetch, refetch_interval=self.jwks_refetch_interval)


@dataclass(frozen=True)
class Claims:
    raw: dict[str, Any]
    subject: str
    client_id: str | None
    scopes: frozenset[str]
    expires_at: float

    def sees(self, owner: str | None, all_scope: str) -> bool:
        """May this token read a resource that belongs to `owner`?

        Its own (`owner` is the token's `sub`), or anyone's with the staff scope `all_scope`
        (e.g. `payments:read:all`). A resource with no owner is seen only with `all_scope`.
        Services answer 404 when this is False, so another user's resource is never revealed.
        """
        return all_scope in self.scopes or (owner is not None and owner == self.subject)

    def owner_filter(self, all_scope: str) -> str | None:
        """The owner a list is narrowed to: the token's `sub`, or None (everyone's) with
        `all_scope`. The list form of `sees`."""
        return None if all_scope in self.scopes else self.subject

    def require(self, scopes: Iterable[str]) -> None:
        missing = [s for s in scopes if s not in self.scopes]
        if missing:
            raise InsufficientScope(
                f"the token lacks scope {' '.join(missing)}", scope=" ".join(scopes)
            )


def bearer_token(authorization: str | None) -> str:
    if not authorization:
        raise MissingToken("no access token")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise TokenError("the Authorization header is not a Bearer token")
    return token.strip()


def token_problem(exc: TokenError, realm: str = "portico") -> Problem:
    """The RFC 6750 answer: 401/403 problem with `WWW-Authenticate`."""
    if exc.status == 503:
        return Problem(503, exc.description, headers={"Retry-After": "5"})
    parts = [f'realm="{realm}"']
    if exc.error:
        parts.append(f'error="{exc.error}"')
        parts.append('error_description="{}"'.format(exc.description.replace('"', "'")))
    if exc.scope:
        parts.append(f'scope="{exc.scope}"')
    title = "Forbidden" if exc.status == 403 else "Unauthorized"
    return Problem(
        exc.status,
        exc.description,
        title=title,
        headers={"WWW-Authenticate": "Bearer " + ", ".join(parts)},
    )


def fetch_jwks_sync(url: str, timeout: float = 5.0) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


@dataclass
class _Core:
    """The I/O-free part: key ring, token cache and the checks themselves."""

    policy: TokenPolicy
    refetch_interval: float = 10.0
    cache_size: int = 10_000
    keys: dict[str, jwt.PyJWK] = field(default_factory=dict)
    fetched_at: float = float("-inf")
    cache: dict[str, Claims] = field(default_factory=dict)

    def load(self, jwks: dict[str, Any]) -> None:
        keys: dict[str, jwt.PyJWK] = {}
        for entry in jwks.get("keys", []):
            kid = entry.get("kid")
            if not kid or entry.get("use", "sig") != "sig":
                continue
            try:
                keys[kid] = jwt.PyJWK(entry)
            except jwt.PyJWTError:
                continue  # a key we cannot use must not hide the others
        self.keys = keys
        self.fetched_at = time.monotonic()

    def may_refetch(self) -> bool:
        return time.monotonic() - self.fetched_at >= self.refetch_interval

    def cached(self, token: str) -> Claims | None:
        claims = self.cache.get(token)
        if claims is not None and claims.expires_at <= time.time():
            self.cache.pop(token, None)
            return None
        return claims

    def header(self, token: str) -> tuple[str, str]:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise TokenError("the token is malformed") from exc
        alg = header.get("alg")
        if alg not in self.policy.algorithms:
            raise TokenError(f"algorithm {alg!r} is not accepted")
        if str(header.get("typ", "")).lower() not in _TYP:
            raise TokenError("the token is not an access token (typ must be at+jwt)")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise TokenError("the token has no key id")
        return alg, kid

    def verify_with(self, token: str, alg: str, kid: str) -> Claims:
        key = self.keys.get(kid)
        if key is None:
            raise TokenError("the token was signed by an unknown key")
        if _KTY_FOR_ALG[alg[:2]] != key.key_type:
            raise TokenError("the token's algorithm does not match its key")
        try:
            raw = jwt.decode(
                token,
                key.key,
                algorithms=[alg],
                audience=self.policy.audience,
                issuer=self.policy.issuer,
                leeway=self.policy.leeway,
                options={"require": ["exp", "iat", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenError("the token has expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise TokenError("the token is not valid yet") from exc
        except jwt.InvalidAudienceError as exc:
            raise TokenError("the token is not meant for this audience") from exc
        except jwt.InvalidIssuerError as exc:
            raise TokenError("the token was issued by an untrusted issuer") from exc
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise TokenError("the token signature or claims are invalid") from exc
        scope = raw.get("scope", "")
        claims = Claims(
            raw=raw,
            subject=str(raw["sub"]),
            client_id=raw.get("client_id"),
            scopes=frozenset(scope.split() if isinstance(scope, str) else ()),
            expires_at=float(raw["exp"]),
        )
        if len(self.cache) >= self.cache_size:
            self.cache.pop(next(iter(self.cache)))
        self.cache[token] = claims
        return claims


class TokenVerifier:
    """Blocking verifier for threaded servers (Flask under gunicorn)."""

    def __init__(
        self,
        policy: TokenPolicy,
        fetch_jwks: Callable[[], dict[str, Any]],
        *,
        refetch_interval: float = 10.0,
        cache_size: int = 10_000,
    ) -> None:
        self._core = _Core(policy, refetch_interval, cache_size)
        self._fetch = fetch_jwks
        self._lock = threading.Lock()

    def verify(self, token: str) -> Claims:
        claims = self._core.cached(token)
        if claims is not None:
            return claims
        alg, kid = self._core.header(token)
        if kid not in self._core.keys:
            self._refresh()
        return self._core.verify_with(token, alg, kid)

    def _refresh(self) -> None:
        with self._lock:
            if self._core.may_refetch():
                try:
                    self._core.load(self._fetch())
                except Exception as exc:
                    self._core.fetched_at = time.monotonic()
                    raise KeysUnavailable("the signing keys are unavailable") from exc


class AsyncTokenVerifier:
    """Non-blocking verifier for asyncio servers (the gateway, aiohttp services)."""

    def __init__(
        self,
        policy: TokenPolicy,
        fetch_jwks: Callable[[], Awaitable[dict[str, Any]]],
        *,
        refetch_interval: float = 10.0,
        cache_size: int = 10_000,
    ) -> None:
        self._core = _Core(policy, refetch_interval, cache_size)
        self._fetch = fetch_jwks
        self._lock = asyncio.Lock()

    def cached(self, token: str) -> Claims | None:
        """The hot path: a verified token still in date, without awaiting."""
        return self._core.cached(token)

    async def verify(self, token: str) -> Claims:
        claims = self._core.cached(token)
        if claims is not None:
            return claims
        alg, kid = self._core.header(token)
        if kid not in self._core.keys:
            await self._refresh()
        return self._core.verify_with(token, alg, kid)

    async def _refresh(self) -> None:
        async with self._lock:  # concurrent unknown kids share one fetch
            if self._core.may_refetch():
                try:
                    self._core.load(await self._fetch())
                except Exception as exc:
                    self._core.fetched_at = time.monotonic()
                    raise KeysUnavailable("the signing keys are unavailable") from exc
