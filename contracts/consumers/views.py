"""views (the read side) as a consumer.

Messages: for every event type its bindings receive (derived from the system, see
contracts.boundaries), the example message goes through views' real handler
(`Projector.handle_event`, inside an inbox-like transaction on a real SQLite database, the
body read as the consumer reads it). Order events carry the envelope fields `stream`,
`version` and `position` (ADR 0030); each example is the first event of its own stream.

HTTP: its real `FeedClient` reads orders' history feed, and its real `BlockingServiceToken` asks
identity for views' token (client_credentials, scope orders:events).
"""

from __future__ import annotations

import hashlib
import tempfile
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import requests
from pact import Pact, match
from sqlalchemy import Engine

from chassis import create_db_engine, sqlite_url
from chassis.messaging import Event
from chassis.migrations import upgrade
from chassis.service_token import BlockingServiceToken
from services.views.adapters.consumer import message_body
from services.views.adapters.feed import FEED_PATH, SCOPE, FeedClient
from services.views.adapters.orm import metadata
from services.views.migrations import MIGRATIONS_DIR
from services.views.service_layer.lag import LagTracker
from services.views.service_layer.projector import Projector
from services.views.settings import ViewsSettings

from ..boundaries import message_boundaries
from . import ConsumerFailed, label

__all__ = ["EVENT_DATA", "run"]

CONSUMER = "views"
ORDER_ID = match.str("7d5e2c1a-0000-4000-8000-000000000001")
OWNER = match.str("alice")
MONEY = match.regex("19.98", regex=r"^\d+\.\d{2}$")
LINE = {"sku": match.str("SKU-1"), "quantity": match.int(2), "unit_price": MONEY}
# order.created may come unpriced (unit_price null until order.priced): not required there
UNPRICED_LINE = {"sku": match.str("SKU-1"), "quantity": match.int(2)}
_ORDER = {"order_id": ORDER_ID, "owner": OWNER}

# What the projector reads from each event's `data`.
EVENT_DATA: dict[str, dict[str, Any]] = {
    "order.created": {
        **_ORDER,
        "items": match.each_like(UNPRICED_LINE),
        "currency": match.str("EUR"),
    },
    "order.priced": {
        **_ORDER,
        "items": match.each_like(LINE),
        "total": MONEY,
        "currency": match.str("EUR"),
    },
    "order.stock_reserved": _ORDER,
    "order.payment_captured": {
        **_ORDER,
        "payment_id": match.str("pay-1"),
        "amount": MONEY,
        "currency": match.str("EUR"),
    },
    "order.payment_declined": _ORDER,
    "order.confirmed": {**_ORDER, "total": MONEY, "currency": match.str("EUR")},
    "order.stock_committed": _ORDER,
    "order.payment_refunded": _ORDER,
    "order.stock_released": _ORDER,
    "order.compensating": _ORDER,
    "order.rejected": _ORDER,
    "notification.sent": {"notification_id": match.str("note-1"), "order_id": ORDER_ID},
    "product.created": {
        "id": match.str("prod-1"),
        "sku": match.str("SKU-1"),
        "version": match.int(1),
    },
    "product.updated": {
        "id": match.str("prod-1"),
        "sku": match.str("SKU-1"),
        "version": match.int(2),
    },
    "product.deleted": {
        "id": match.str("prod-1"),
        "sku": match.str("SKU-1"),
        "version": match.int(2),
    },
}
_TIME = match.regex(
    "2026-01-01T00:00:00.000000Z",
    regex=r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$",
)


def envelope(event_type: str, data: dict[str, Any]) -> dict[str, Any]:
    digest = hashlib.md5(event_type.encode()).hexdigest()
    body: dict[str, Any] = {
        "id": match.regex(digest, regex=r"^\S+$"),
        "type": event_type,
        "occurred_at": _TIME,
        "data": data,
    }
    if event_type.startswith("order."):  # the first event of a stream of its own
        body.update(
            stream=match.str(f"ord-{digest[:8]}"), version=match.int(1), position=match.int(1)
        )
    return body


def _handler(engine: Engine) -> Any:
    projector = Projector(LagTracker())

    def handle(body: Any, metadata: dict[str, Any]) -> None:
        raw = body.encode() if isinstance(body, str) else bytes(body)
        event = Event.from_message(raw, {})
        with message_body(raw), engine.begin() as conn:
            projector.handle_event(event, conn)

    return handle


def _pact(pacts: dict[str, Pact], provider: str) -> Pact:
    if provider not in pacts:
        pacts[provider] = Pact(CONSUMER, provider).with_specification("V4")
    return pacts[provider]


def _messages(
    pacts: dict[str, Pact], event_data: dict[str, dict[str, Any]], problems: list[str]
) -> None:
    with tempfile.TemporaryDirectory(prefix="contracts-views-") as tmp:
        url = sqlite_url(Path(tmp) / "views.db")
        upgrade(metadata, MIGRATIONS_DIR, url)
        engine = create_db_engine(url)
        try:
            for b in message_boundaries():
                if b.consumer != CONSUMER:
                    continue
                pact = _pact(pacts, b.provider)
                for item in b.items:
                    event_type = item.removeprefix("event:")
                    if event_type not in event_data:
                        continue  # no contract yet: the matrix reports it missing
                    i = pact.upon_receiving(f"event {event_type}", "Async")
                    label(i, item)
                    i.with_body(envelope(event_type, event_data[event_type]), "application/json")
                    i.with_metadata({"routing_key": event_type})
                try:
                    pact.verify(_handler(engine), "Async")
                except Exception as exc:  # the handler refused an example message
                    errors = getattr(exc, "_errors", None) or [exc]
                    problems.extend(f"views <- {b.provider}: {e}" for e in errors)
        finally:
            engine.dispose()


CLIENT_ID = "views-service"
SECRET = "contract-secret"
TOKEN_PATH = "/oauth/token"
BEARER = match.regex("Bearer eyJ.views.token", regex=r"^Bearer \S+$")
FEED_EVENT = {
    "id": match.str("e1"),
    "type": match.str("order.created"),
    "occurred_at": _TIME,
    "data": match.like({"order_id": "7d5e2c1a-0000-4000-8000-000000000001", "owner": "alice"}),
    "stream": match.str("7d5e2c1a-0000-4000-8000-000000000001"),
    "version": match.int(1),
    "position": match.int(1),
}


class _Fixed:
    """views' token, as far as the feed's contract is concerned: some bearer token."""

    def get(self) -> str:
        return "eyJ.views.token"

    def invalidate(self) -> None:
        pass


def _http(pacts: dict[str, Pact], problems: list[str]) -> None:
    orders = _pact(pacts, "orders")
    i = orders.upon_receiving("the history feed from the start")
    label(i, "call:feed")
    i.given("orders with events exist")
    i.with_request("GET", FEED_PATH).with_query_parameters(
        {"after": "0", "limit": str(ViewsSettings().feed_page)}
    ).with_header("Authorization", BEARER)
    i.will_respond_with(200).with_body(
        {"events": match.each_like(FEED_EVENT), "last_position": match.int(6)},
        content_type="application/json",
    )
    identity = _pact(pacts, "identity")
    t = identity.upon_receiving("views' own token (client_credentials)")
    label(t, "call:token")
    t.given("the views service client exists", secret=SECRET)
    basic = requests.auth._basic_auth_str(CLIENT_ID, SECRET)  # what requests sends
    t.with_request("POST", TOKEN_PATH).with_header(
        "Authorization", match.regex(basic, regex=r"^Basic \S+$")
    ).with_body(
        urlencode({"grant_type": "client_credentials", "scope": SCOPE}),
        content_type="application/x-www-form-urlencoded",
    )
    t.will_respond_with(200).with_body(
        {
            "access_token": match.str("eyJ.views.token"),
            "token_type": match.regex("Bearer", regex=r"^(?i:bearer)$"),
            "expires_in": match.int(900),
        },
        content_type="application/json",
    )
    with ExitStack() as stack:
        feed_server = stack.enter_context(
            orders.serve(addr="127.0.0.1", raises=False, verbose=False)
        )
        token_server = stack.enter_context(
            identity.serve(addr="127.0.0.1", raises=False, verbose=False)
        )
        session = stack.enter_context(requests.Session())
        feed = FeedClient(str(feed_server.url), _Fixed(), session, 5.0)  # type: ignore[arg-type]
        try:
            page = feed.read(0, ViewsSettings().feed_page)
            if not page.events or page.events[0].version != 1:
                problems.append("views -> orders: the feed page read back wrong")
        except Exception as exc:
            problems.append(f"views -> orders: the feed: {type(exc).__name__}: {exc}")
        token = BlockingServiceToken(
            session,
            str(token_server.url).rstrip("/") + TOKEN_PATH,
            SCOPE,
            client_id=CLIENT_ID,
            client_secret=SECRET,
        )
        try:
            token.get()
        except Exception as exc:
            problems.append(f"views -> identity: the token: {type(exc).__name__}: {exc}")
        for name, server in (("orders", feed_server), ("identity", token_server)):
            if not server.matched:
                problems.extend(f"views -> {name}: mock server: {m}" for m in server.mismatches)


def run(pact_dir: Path, event_data: dict[str, dict[str, Any]] | None = None) -> list[Path]:
    """Messages and HTTP go to separate Pact objects (a mock server refuses a pact holding
    messages) and into one file per provider: orders' file gets both."""
    problems: list[str] = []
    messages: dict[str, Pact] = {}
    http: dict[str, Pact] = {}
    _messages(messages, EVENT_DATA if event_data is None else event_data, problems)
    _http(http, problems)
    if problems:
        raise ConsumerFailed("; ".join(problems))
    for pact in messages.values():
        pact.write_file(pact_dir, overwrite=True)
    for provider, pact in http.items():  # identity's: jwks merges its interaction in later
        pact.write_file(pact_dir, overwrite=provider not in messages)
    return [pact_dir / f"{CONSUMER}-{p}.json" for p in {**messages, **http}]
