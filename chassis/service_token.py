"""A service's own access token (OAuth2 client_credentials), cached until shortly before expiry.

orders asks identity for its token on the event loop (`ServiceToken`, aiohttp); views asks on
its consumer and worker threads (`BlockingServiceToken`, requests). Both share everything but
the HTTP call: the credentials, the request body, the answer's validation, the cache and its
margin. Credentials are an id and secret, or the JSON file `identity init --seed-dev` writes
(read when a token is needed, so a service may start before identity has seeded it).

Every failure is one exception, `TokenUnavailable`: identity unreachable or refusing, the
credentials missing, or an answer out of bounds (not JSON, larger than `MAX_ANSWER_BYTES`, an
`access_token` missing, not a string or over `MAX_TOKEN_CHARS`, an `expires_in` that is not a
number of seconds between 1 and `MAX_LIFETIME`).
"""

from __future__ import annotations

import asyncio
import json
import math
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

import aiohttp
import requests

__all__ = [
    "DEFAULT_LIFETIME",
    "MAX_ANSWER_BYTES",
    "MAX_LIFETIME",
    "MAX_TOKEN_CHARS",
    "BlockingServiceToken",
    "ServiceToken",
    "TokenUnavailable",
]

MAX_ANSWER_BYTES = 64 * 1024  # identity's answer is well under 4 KiB
MAX_TOKEN_CHARS = 8 * 1024  # an RS256 JWT with a few scopes is about 1 KiB
MAX_CLIENT_FILE_BYTES = 64 * 1024
DEFAULT_LIFETIME = 300.0  # seconds, when the answer has no expires_in (RFC 6749 5.1: optional)
MAX_LIFETIME = 365 * 24 * 3600.0  # anything longer is a broken answer, not a policy


class TokenUnavailable(Exception):
    """No token could be obtained (identity down, credentials missing or refused, a bad answer)."""


Session = TypeVar("Session", aiohttp.ClientSession, requests.Session)
Lock = TypeVar("Lock", asyncio.Lock, threading.Lock)


class _TokenCache(Generic[Session, Lock]):
    """What both clients share: credentials, request body, answer validation and the cache."""

    _new_lock: Callable[[], Lock]  # each client's own: one fetch at a time, callers share it

    def __init__(
        self,
        session: Session,
        token_url: str,
        scope: str,
        *,
        client_id: str | None = None,
        client_secret: str | None = None,
        client_file: str | Path | None = None,
        timeout: float = 5.0,
        margin: float = 30.0,
    ) -> None:
        self._session = session
        self._url = token_url
        self._scope = scope
        self._id = client_id
        self._secret = client_secret
        self._file = Path(client_file) if client_file else None
        self._timeout = timeout
        self._margin = margin
        self._token: str | None = None
        self._expires = 0.0
        self._lock = self._new_lock()

    def _credentials(self) -> tuple[str, str]:
        if self._id and self._secret:
            return self._id, self._secret
        if self._file is None:
            raise TokenUnavailable("no client credentials configured")
        unreadable = TokenUnavailable(f"cannot read client credentials from {self._file}")
        try:
            with self._file.open("rb") as fh:
                raw = fh.read(MAX_CLIENT_FILE_BYTES + 1)
            data: Any = json.loads(raw)
        except (OSError, ValueError) as exc:
            raise unreadable from exc
        if len(raw) > MAX_CLIENT_FILE_BYTES or not isinstance(data, dict):
            raise unreadable
        client_id, secret = data.get("client_id"), data.get("client_secret")
        if not (isinstance(client_id, str) and client_id and isinstance(secret, str) and secret):
            raise unreadable
        return client_id, secret

    def _body(self) -> dict[str, str]:
        return {"grant_type": "client_credentials", "scope": self._scope}

    def _cached(self) -> str | None:
        if self._token is not None and time.monotonic() < self._expires:
            return self._token
        return None

    def _keep(self, status: int, raw: bytes, started: float) -> str:
        """Validate the token endpoint's answer and cache the token until `margin` before expiry."""
        if status != 200:
            raise TokenUnavailable(f"token endpoint answered {status}")
        if len(raw) > MAX_ANSWER_BYTES:
            raise TokenUnavailable(f"token endpoint answered more than {MAX_ANSWER_BYTES} bytes")
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise TokenUnavailable("token endpoint answered something other than a JSON object")
        token = body.get("access_token")
        if not isinstance(token, str) or not token:
            raise TokenUnavailable("token endpoint answered without an access_token")
        if len(token) > MAX_TOKEN_CHARS:
            raise TokenUnavailable("token endpoint answered an oversized access_token")
        lifetime = body.get("expires_in", DEFAULT_LIFETIME)
        if (
            isinstance(lifetime, bool)
            or not isinstance(lifetime, int | float)
            or not math.isfinite(lifetime)
            or not 1 <= lifetime <= MAX_LIFETIME
        ):
            raise TokenUnavailable(f"token endpoint answered a bad expires_in: {lifetime!r:.40}")
        self._token = token
        self._expires = started + max(1.0, lifetime - self._margin)
        return token

    def _drop(self, token: str) -> None:
        if token == self._token:
            self._token, self._expires = None, 0.0


class ServiceToken(_TokenCache[aiohttp.ClientSession, asyncio.Lock]):
    """The async client (aiohttp): concurrent callers share one token request."""

    _new_lock = staticmethod(asyncio.Lock)

    async def get(self) -> str:
        if token := self._cached():
            return token
        async with self._lock:
            return self._cached() or await self._fetch()

    def invalidate(self, token: str) -> None:
        """The token was refused upstream (say, a key rotation went wrong): fetch a new one."""
        self._drop(token)

    async def _fetch(self) -> str:
        client_id, secret = self._credentials()
        started = time.monotonic()
        raw = bytearray()
        try:
            async with self._session.post(
                self._url,
                data=self._body(),
                headers={"Authorization": aiohttp.encode_basic_auth(client_id, secret)},
                timeout=aiohttp.ClientTimeout(total=self._timeout),
            ) as resp:
                while chunk := await resp.content.read(MAX_ANSWER_BYTES + 1 - len(raw)):
                    raw += chunk
                    if len(raw) > MAX_ANSWER_BYTES:
                        break
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TokenUnavailable(f"token endpoint unreachable: {exc!r}") from exc
        return self._keep(resp.status, bytes(raw), started)


class BlockingServiceToken(_TokenCache[requests.Session, threading.Lock]):
    """The blocking client (requests), thread-safe; never call it on an event loop."""

    _new_lock = staticmethod(threading.Lock)

    def get(self) -> str:
        with self._lock:
            return self._cached() or self._fetch()

    def invalidate(self, token: str) -> None:
        """The token was refused upstream: the next `get` fetches a new one."""
        with self._lock:
            self._drop(token)

    def _fetch(self) -> str:
        client_id, secret = self._credentials()
        started = time.monotonic()
        raw = bytearray()
        try:
            with self._session.post(
                self._url,
                data=self._body(),
                auth=(client_id, secret),
                timeout=self._timeout,
                stream=True,
            ) as resp:
                for chunk in resp.iter_content(8192):
                    raw += chunk
                    if len(raw) > MAX_ANSWER_BYTES:
                        break
        except requests.RequestException as exc:
            raise TokenUnavailable(f"token endpoint unreachable: {exc!r}") from exc
        return self._keep(resp.status_code, bytes(raw), started)
