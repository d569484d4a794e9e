"""The client of orders' history feed, `GET /internal/v1/events?after=&limit=`, with views' own
service token (client_credentials, scope `orders:events`).

Blocking (requests): it runs on the consumer's thread when a gap is filled and on a worker
thread at start, never on the event loop. The token is the chassis' `BlockingServiceToken`
(credentials from VIEWS_CLIENT_ID / VIEWS_CLIENT_SECRET or the file `identity init --seed-dev`
writes, read when first needed).
"""

from __future__ import annotations

from dataclasses import dataclass

import requests

from chassis.service_token import BlockingServiceToken, TokenUnavailable

from ..domain import Envelope, parse_envelope

__all__ = [
    "FEED_PATH",
    "OUTBOUND",
    "SCOPE",
    "FeedClient",
    "FeedPage",
    "FeedUnavailable",
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


class FeedClient:
    def __init__(
        self,
        orders_url: str,
        token: BlockingServiceToken,
        session: requests.Session,
        timeout: float,
    ) -> None:
        self._url = orders_url.rstrip("/") + FEED_PATH
        self._token = token
        self._session = session
        self._timeout = timeout

    def read(self, after: int, limit: int) -> FeedPage:
        """Events after `after`, oldest first; FeedUnavailable when orders cannot say now."""
        for attempt in (1, 2):  # a refused token (keys rotated) is fetched once more
            try:
                token = self._token.get()
            except TokenUnavailable as exc:
                raise FeedUnavailable(str(exc)) from exc
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
                self._token.invalidate(token)
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
