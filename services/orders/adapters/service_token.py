"""Orders' own access token (OAuth2 client_credentials), cached until shortly before expiry.

Credentials come from ORDERS_CLIENT_ID / ORDERS_CLIENT_SECRET or, when those are unset, from
the file `identity init --seed-dev` writes (read when a token is first needed, so orders may
start before identity has seeded it). Concurrent callers share one token request.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import aiohttp

__all__ = ["ServiceToken", "TokenUnavailable"]


class TokenUnavailable(Exception):
    """No token could be obtained (identity down, credentials missing or refused)."""


class ServiceToken:
    def __init__(
        self,
        session: aiohttp.ClientSession,
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
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._margin = margin
        self._token: str | None = None
        self._expires = 0.0
        self._lock = asyncio.Lock()

    def _credentials(self) -> tuple[str, str]:
        if self._id and self._secret:
            return self._id, self._secret
        if self._file is None:
            raise TokenUnavailable("no client credentials configured")
        try:
            data = json.loads(self._file.read_text())
            return str(data["client_id"]), str(data["client_secret"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise TokenUnavailable(f"cannot read client credentials from {self._file}") from exc

    async def get(self) -> str:
        if self._token and time.monotonic() < self._expires:
            return self._token
        async with self._lock:
            if self._token and time.monotonic() < self._expires:
                return self._token
            self._token, self._expires = await self._fetch()
            return self._token

    def invalidate(self, token: str) -> None:
        """The token was refused upstream (say, a key rotation went wrong): fetch a new one."""
        if token == self._token:
            self._token, self._expires = None, 0.0

    async def _fetch(self) -> tuple[str, float]:
        client_id, secret = self._credentials()
        started = time.monotonic()
        try:
            async with self._session.post(
                self._url,
                data={"grant_type": "client_credentials", "scope": self._scope},
                headers={"Authorization": aiohttp.encode_basic_auth(client_id, secret)},
                timeout=self._timeout,
            ) as resp:
                body = await resp.json(content_type=None)
                if resp.status != 200 or not isinstance(body, dict):
                    raise TokenUnavailable(f"token endpoint answered {resp.status}")
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            raise TokenUnavailable(f"token endpoint unreachable: {exc!r}") from exc
        token = body.get("access_token")
        if not isinstance(token, str):
            raise TokenUnavailable("token endpoint answered without an access_token")
        lifetime = float(body.get("expires_in", 300))
        return token, started + max(1.0, lifetime - self._margin)
