"""A stand-in for orders' event log and its history feed, in the contract's exact format
(docs/adr/0030): `GET /internal/v1/events?after=&limit=` with a bearer token holding
`orders:events`, and a client_credentials token endpoint that issues such tokens.

`FeedLog.append` gives an event its stream version and global position; `publish` sends the
same envelope to the events exchange as orders' outbox relay does (type as routing key, JSON
body), so a test decides which events the broker carries and which only the feed has.
"""

from __future__ import annotations

import threading
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import orjson
from aiohttp import BasicAuth, web
from kombu import Producer

from chassis.messaging import BrokerSettings, connect, events_exchange
from contracts.tokens import TestIssuer

__all__ = ["CLIENT", "FeedLog", "feed_app", "order_events", "publish"]

CLIENT = ("views-service", "s3cret")


class FeedLog:
    """Orders' event log: per-stream versions without gaps, increasing global positions."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []
        self._versions: dict[str, int] = defaultdict(int)
        self._position = 0
        self._lock = threading.Lock()
        self.unavailable = False  # answer 503, as orders down would (connection refused aside)
        self.reads: list[int] = []  # the `after` of every page asked for

    def append(
        self, type_: str, data: dict[str, Any], when: datetime | None = None
    ) -> dict[str, Any]:
        with self._lock:
            stream = str(data["order_id"])
            self._versions[stream] += 1
            self._position += 1
            event = {
                "id": uuid.uuid4().hex,
                "type": type_,
                "occurred_at": (when or datetime.now(UTC)).isoformat().replace("+00:00", "Z"),
                "data": data,
                "stream": stream,
                "version": self._versions[stream],
                "position": self._position,
            }
            self.events.append(event)
            return event

    def page(self, after: int, limit: int) -> dict[str, Any]:
        with self._lock:
            self.reads.append(after)
            chosen = [e for e in self.events if e["position"] > after][:limit]
            return {"events": chosen, "last_position": self._position}


def order_events(
    log: FeedLog,
    order_id: str,
    owner: str,
    lines: list[tuple[str, int, str]],
    *,
    outcome: str = "confirmed",
    when: datetime | None = None,
) -> list[dict[str, Any]]:
    """The events of one order's saga: created (unpriced), priced, reserved, then captured and
    confirmed and committed, or declined, released and rejected."""
    total = f"{sum(q * float(p) for _, q, p in lines):.2f}"
    base = {"order_id": order_id, "owner": owner}
    unpriced = [{"sku": s, "quantity": q, "unit_price": None} for s, q, _ in lines]
    priced = [{"sku": s, "quantity": q, "unit_price": p} for s, q, p in lines]
    out = [
        log.append(
            "order.created",
            {**base, "items": unpriced, "total": None, "currency": "EUR", "payment_method": "pm"},
            when,
        ),
        log.append(
            "order.priced", {**base, "items": priced, "total": total, "currency": "EUR"}, when
        ),
        log.append("order.stock_reserved", base, when),
    ]
    if outcome == "confirmed":
        pay = f"pay-{order_id}"
        out += [
            log.append(
                "order.payment_captured",
                {**base, "payment_id": pay, "amount": total, "currency": "EUR"},
                when,
            ),
            log.append(
                "order.confirmed",
                {**base, "total": total, "currency": "EUR", "payment_id": pay},
                when,
            ),
            log.append("order.stock_committed", base, when),
        ]
    else:
        out += [
            log.append("order.payment_declined", {**base, "reason": "card declined"}, when),
            log.append("order.stock_released", base, when),
            log.append("order.rejected", {**base, "reason": "payment declined"}, when),
        ]
    return out


def feed_app(log: FeedLog, issuer: TestIssuer) -> web.Application:
    verifier = issuer.verifier()

    async def token(request: web.Request) -> web.Response:
        form = await request.post()
        auth = BasicAuth.decode(request.headers.get("Authorization", ""))
        if (auth.login, auth.password) != CLIENT or form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "invalid_client"}, status=401)
        scope = str(form.get("scope", ""))
        return web.json_response(
            {
                "access_token": issuer.token(scope.split(), sub=CLIENT[0]),
                "token_type": "Bearer",
                "expires_in": 300,
                "scope": scope,
            }
        )

    async def events(request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        try:
            claims = verifier.verify(header.removeprefix("Bearer "))
        except Exception:
            return web.json_response({"title": "Unauthorized"}, status=401)
        if "orders:events" not in claims.scopes:
            return web.json_response({"title": "Forbidden"}, status=403)
        if log.unavailable:
            return web.json_response({"title": "Service Unavailable"}, status=503)
        try:
            after = int(request.query.get("after", "0"))
            limit = int(request.query.get("limit", "500"))
        except ValueError:
            return web.json_response({"title": "Unprocessable"}, status=422)
        if after < 0 or not 1 <= limit <= 1000:
            return web.json_response({"title": "Unprocessable"}, status=422)
        return web.json_response(log.page(after, limit))

    app = web.Application()
    app.router.add_post("/oauth/token", token)
    app.router.add_get("/internal/v1/events", events)
    return app


def publish(broker: BrokerSettings, *envelopes: dict[str, Any]) -> None:
    """Send envelopes to the events exchange as an outbox relay does."""
    with connect(broker) as conn:
        producer = Producer(conn.default_channel)
        for env in envelopes:
            producer.publish(
                orjson.dumps(env),
                exchange=events_exchange(broker),
                routing_key=env["type"],
                content_type="application/json",
                content_encoding="utf-8",
                delivery_mode=2,
                declare=[events_exchange(broker)],
            )
