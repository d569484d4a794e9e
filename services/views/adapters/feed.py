"""The client of orders' history feed, `GET /internal/v1/events?after=&limit=`, with views' own
service token (client_credentials, scope `orders:events`).

Blocking (requests): it runs on the consumer's thread when a gap is filled and on a worker
thread at start, never on the event loop. Credentials come from VIEWS_CLIENT_ID /
VIEWS_CLIENT_SECRET or the file `identity init --seed-dev` writes, read when first needed.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import requests

from ..domain import Envelope, parse_envelope

__all__ = [
    "FEED_PATH",
    "OUTBOUND",
    "SCOPE",
    "FeedClient",
    "FeedPage",
    "FeedUnavailable",
    "ServiceToken",
]

FEED_PATH = "/internal/v1/events"
SCOPE = "orders:events"
# What views calls over HTTP (operation -> provider), for the contracts' boundaries.
OUTBOUND = {"feed": "orders", "token": "identity"}


class FeedUnavailable(Exception):
    """The feed (or the token for it) could not be read now."""


@dataclass(frozen=True)
class FeedPage:
    events: list[Envelope]
    last_position: int  # the head of orders' log when the page was read


class ServiceToken:
    """views' access token, cached until shortly before it expires."""

    def __init__(
        self,
        session: requests.Session,
        token_url: str,
        *,
        client_id: str | None = None,
        client_secret: str | None = None,
        client_file: str | Path | None = None,
        timeout: float = 5.0,
        margin: float = 30.0,
    ) -> None:
        self._session = session
        self._url = token_url
        self._id, self._secret = client_id, client_secret
        self._file = Path(client_file) if client_file else None
        self._timeout = timeout
        self._margin = margin
        self._token: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()

    def _credentials(self) -> tuple[str, str]:
        if self._id and self._secret:
            return self._id, self._secret
        if self._file is None:
            raise FeedUnavailable("no client credentials configured")
        try:
            data = json.loads(self._file.read_text())
            return str(data["client_id"]), str(data["client_secret"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise FeedUnavailable(f"cannot read client credentials from {self._file}") from exc

    def get(self) -> str:
        with self._lock:
            if self._token is None or time.monotonic() >= self._expires:
                self._token, self._expires = self._fetch()
            return self._token

    def invalidate(self) -> None:
        with self._lock:
            self._token, self._expires = None, 0.0

    def _fetch(self) -> tuple[str, float]:
        started = time.monotonic()
        try:
            resp = self._session.post(
                self._url,
                data={"grant_type": "client_credentials", "scope": SCOPE},
                auth=self._credentials(),
                timeout=self._timeout,
            )
            body = resp.json()
        except (requests.RequestException, ValueError) as exc:
            raise FeedUnavailable(f"token endpoint unreachable: {exc!r}") from exc
        token = body.get("access_token") if isinstance(body, dict) else None
        if resp.status_code != 200 or not isinstance(token, str):
            raise FeedUnavailable(f"token endpoint answered {resp.status_code}")
        lifetime = float(body.get("expires_in", 300))
        return token, started + max(1.0, lifetime - self._margin)


class FeedClient:
    def __init__(
        self, orders_url: str, token: ServiceToken, session: requests.Session, timeout: float
    ) -> None:
        self._url = orders_url.rstrip("/") + FEED_PATH
        self._token = token
        self._session = session
        self._timeout = timeout

    def read(self, after: int, limit: int) -> FeedPage:
        """Events after `after`, oldest first; FeedUnavailable when orders cannot say now."""
        for attempt in (1, 2):  # a refused token (keys rotated) is fetched once more
            token = self._token.get()
            try:
                resp = self._session.get(
                    self._url,
                    params={"after": after, "limit": limit},
                    headers={"Authorization": f"Bearer {token}"},
                    timeout=self._timeout,
                )
            except requests.RequestException as exc:
                raise FeedUnavailable(f"feed unreachable: {exc!r}") from exc
            if resp.status_code == 401 and attempt == 1:
                self._token.invalidate()
                continue
            break
        if resp.status_code != 200:
            raise FeedUnavailable(f"feed answered {resp.status_code}")
        try:
            doc = resp.json()
            events = [parse_envelope(e) for e in doc["events"]]
            head = doc["last_position"]
        except (ValueError, KeyError, TypeError) as exc:
            raise FeedUnavailable(f"feed answered a malformed page: {exc}") from exc
        if not isinstance(head, int) or any(e.position is None for e in events):
            raise FeedUnavailable("feed page without positions")
        return FeedPage(events, head)
