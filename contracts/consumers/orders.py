"""orders as a consumer of identity, catalog, inventory and payments: the saga's real client
(`HttpUpstreams`) makes each call against the providers' Pact mock servers, and each call's
domain outcome is checked (a 402 must read as Declined, a 409 as OutOfStock, ...); its real
`ServiceToken` asks identity's token endpoint for orders' own token (client_credentials).
Each interaction is labelled with the `OUTBOUND` operation it exercises."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from contextlib import ExitStack
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
from pact import Pact, match

from chassis.resilience import Retry
from chassis.service_token import ServiceToken
from services.orders.adapters.upstreams import SERVICE_SCOPE, HttpUpstreams, Transient
from services.orders.domain import (
    Captured,
    Committed,
    Declined,
    Line,
    OutOfStock,
    Priced,
    Refunded,
    Released,
    Reserved,
    Unavailable,
)
from services.orders.settings import OrdersSettings

from . import ConsumerFailed, label

__all__ = ["run"]

CONSUMER = "orders"
BEARER = match.regex("Bearer service.token", regex=r"^Bearer \S+$")
PROBLEM = "application/problem+json"


class _Token:
    """orders' service token, as far as the contract is concerned: some bearer token."""

    async def get(self) -> str:
        return "service.token"

    def invalidate(self, token: str) -> None:
        pass


Call = Callable[[HttpUpstreams], Awaitable[object]]
# provider -> [(operation, description, state, define(interaction), call, expected outcome type)]
Case = tuple[str, str, tuple[str, dict[str, Any]] | None, Callable[[Any], None], Call, type]


def _json(i: Any, body: Any, status: int, ctype: str = "application/json") -> None:
    i.will_respond_with(status).with_body(body, content_type=ctype)


CLIENT_ID = "orders-service"
SECRET = "contract-secret"
BASIC = aiohttp.encode_basic_auth(CLIENT_ID, SECRET)  # the verifier replays this example
TOKEN_PATH = urlsplit(OrdersSettings().token_url).path  # where orders asks by default


def _token_request(i: Any) -> None:
    i.with_request("POST", TOKEN_PATH).with_header(
        "Authorization", match.regex(BASIC, regex=r"^Basic \S+$")
    ).with_body(
        urlencode({"grant_type": "client_credentials", "scope": SERVICE_SCOPE}),
        content_type="application/x-www-form-urlencoded",
    )
    _json(
        i,
        {
            "access_token": match.str("eyJ.service.token"),
            "token_type": match.regex("Bearer", regex=r"^(?i:bearer)$"),
            "expires_in": match.int(900),
        },
        200,
    )


async def _service_token(u: HttpUpstreams) -> str:
    return await u.token.get()


CASES: dict[str, list[Case]] = {
    "identity": [
        (
            "token",
            "orders' own token (client_credentials)",
            ("the orders service client exists", {"secret": SECRET}),
            _token_request,
            _service_token,
            str,
        ),
    ],
    "catalog": [
        (
            "prices",
            "the price of a sku",
            ("a product exists", {"id": "prod-1", "sku": "SKU-1", "price": "9.99"}),
            lambda i: (
                i.with_request("GET", "/api/v1/products")
                .with_query_parameter("sku", "SKU-1")
                .with_query_parameter("limit", "1")
                .with_header("Authorization", BEARER),
                _json(
                    i,
                    {
                        "items": match.each_like(
                            {"sku": "SKU-1", "price": match.regex("9.99", regex=r"^\d+\.\d{2}$")}
                        )
                    },
                    200,
                ),
            ),
            lambda u: u.prices(["SKU-1"]),
            Priced,
        ),
    ],
    "inventory": [
        (
            "reserve",
            "a reservation",
            ("stock exists", {"sku": "SKU-1", "on_hand": 10}),
            lambda i: (
                i.with_request("POST", "/api/v1/reservations")
                .with_header("Authorization", BEARER)
                .with_body(
                    content_type="application/json",
                    body={"order_id": "ord-r1", "items": [{"sku": "SKU-1", "quantity": 2}]},
                ),
                _json(i, {"order_id": "ord-r1", "status": match.str("RESERVED")}, 201),
            ),
            lambda u: u.reserve("ord-r1", [Line("SKU-1", 2)]),
            Reserved,
        ),
        (
            "reserve",
            "a reservation of more than the stock",
            ("stock exists", {"sku": "SKU-9", "on_hand": 1}),
            lambda i: (
                i.with_request("POST", "/api/v1/reservations")
                .with_header("Authorization", BEARER)
                .with_body(
                    content_type="application/json",
                    body={"order_id": "ord-r2", "items": [{"sku": "SKU-9", "quantity": 5}]},
                ),
                _json(i, {"status": 409, "skus": match.each_like("SKU-9")}, 409, PROBLEM),
            ),
            lambda u: u.reserve("ord-r2", [Line("SKU-9", 5)]),
            OutOfStock,
        ),
        (
            "commit",
            "committing a reservation",
            ("stock is reserved for an order", {"order_id": "ord-c1"}),
            lambda i: (
                i.with_request("POST", "/api/v1/reservations/ord-c1/commit").with_header(
                    "Authorization", BEARER
                ),
                _json(i, {"order_id": "ord-c1", "status": match.str("COMMITTED")}, 200),
            ),
            lambda u: u.commit("ord-c1"),
            Committed,
        ),
        (
            "release",
            "releasing a reservation",
            ("stock is reserved for an order", {"order_id": "ord-l1"}),
            lambda i: (
                i.with_request("POST", "/api/v1/reservations/ord-l1/release").with_header(
                    "Authorization", BEARER
                ),
                _json(i, {"order_id": "ord-l1", "status": match.str("RELEASED")}, 200),
            ),
            lambda u: u.release("ord-l1"),
            Released,
        ),
    ],
    "payments": [
        (
            "charge",
            "a charge",
            None,
            lambda i: (
                i.with_request("POST", "/api/v1/payments")
                .with_header("Authorization", BEARER)
                .with_header("Idempotency-Key", "charge-ord-p1")
                .with_body(
                    content_type="application/json",
                    body={
                        "order_id": "ord-p1",
                        "amount": "19.98",
                        "currency": "EUR",
                        "owner": "user-1",
                        "payment_method": "pm_card_ok",
                    },
                ),
                _json(
                    i,
                    {
                        "id": match.str("pay-1"),
                        "status": "CAPTURED",
                        "amount": match.regex("19.98", regex=r"^\d+\.\d{2}$"),
                        "currency": match.str("EUR"),
                    },
                    201,
                ),
            ),
            lambda u: u.charge("ord-p1", Decimal("19.98"), "EUR", "pm_card_ok", owner="user-1"),
            Captured,
        ),
        (
            "charge",
            "a charge the card declines",
            None,
            lambda i: (
                i.with_request("POST", "/api/v1/payments")
                .with_header("Authorization", BEARER)
                .with_header("Idempotency-Key", "charge-ord-p2")
                .with_body(
                    content_type="application/json",
                    body={
                        "order_id": "ord-p2",
                        "amount": "19.98",
                        "currency": "EUR",
                        "owner": "user-1",
                        "payment_method": "pm_card_declined",
                    },
                ),
                _json(i, {"status": 402, "detail": match.str("declined")}, 402, PROBLEM),
            ),
            lambda u: u.charge(
                "ord-p2", Decimal("19.98"), "EUR", "pm_card_declined", owner="user-1"
            ),
            Declined,
        ),
        (
            "charge",
            "a charge while the card provider is down",
            None,
            lambda i: (
                i.with_request("POST", "/api/v1/payments")
                .with_header("Authorization", BEARER)
                .with_header("Idempotency-Key", "charge-ord-p3")
                .with_body(
                    content_type="application/json",
                    body={
                        "order_id": "ord-p3",
                        "amount": "19.98",
                        "currency": "EUR",
                        "owner": "user-1",
                        "payment_method": "pm_card_error",
                    },
                ),
                _json(i, {"status": 503, "retryable": True}, 503, PROBLEM),
            ),
            lambda u: u.charge("ord-p3", Decimal("19.98"), "EUR", "pm_card_error", owner="user-1"),
            Unavailable,
        ),
        (
            "refund",
            "a refund",
            ("a payment was captured", {"id": "pay-1", "order_id": "ord-p4"}),
            lambda i: (
                i.with_request("POST", "/api/v1/payments/pay-1/refund")
                .with_header("Authorization", BEARER)
                .with_header("Idempotency-Key", "refund-ord-p4"),
                _json(i, {"id": match.str("pay-1"), "status": "REFUNDED"}, 200),
            ),
            lambda u: u.refund("ord-p4", "pay-1"),
            Refunded,
        ),
    ],
}


async def _drive(urls: dict[str, str], cases: dict[str, list[Case]]) -> list[str]:
    problems: list[str] = []
    async with aiohttp.ClientSession() as session:

        def upstreams(token: Any) -> HttpUpstreams:
            return HttpUpstreams(
                session,
                token,
                catalog_url=urls.get("catalog", "http://127.0.0.1:9"),
                inventory_url=urls.get("inventory", "http://127.0.0.1:9"),
                payments_url=urls.get("payments", "http://127.0.0.1:9"),
                retry=Retry(attempts=1, base_delay=0.0, max_delay=0.0, retry_on=(Transient,)),
                failure_threshold=1000,
            )

        calls = upstreams(_Token())
        # the token request goes through a real ServiceToken; every other call's token is fixed
        token_calls = upstreams(
            ServiceToken(
                session,
                urls.get("identity", "http://127.0.0.1:9") + TOKEN_PATH,
                SERVICE_SCOPE,
                client_id=CLIENT_ID,
                client_secret=SECRET,
            )
        )
        for provider, items in cases.items():
            for _op, description, _state, _define, call, expected in items:
                outcome = await call(token_calls if provider == "identity" else calls)
                if not isinstance(outcome, expected):
                    problems.append(
                        f"orders -> {provider}: {description!r}: the client read "
                        f"{outcome!r}, expected {expected.__name__}"
                    )
    return problems


def run(pact_dir: Path, cases: dict[str, list[Case]] | None = None) -> list[Path]:
    cases = CASES if cases is None else cases
    pacts = {p: Pact(CONSUMER, p).with_specification("V4") for p in cases}
    for provider, items in cases.items():
        for op, description, state, define, _call, _expected in items:
            i = pacts[provider].upon_receiving(description)
            label(i, f"call:{op}")
            if state:
                i.given(state[0], **state[1])
            define(i)
    with ExitStack() as stack:
        servers = {
            p: stack.enter_context(pact.serve(addr="127.0.0.1", raises=False, verbose=False))
            for p, pact in pacts.items()
        }
        urls = {p: str(s.url).rstrip("/") for p, s in servers.items()}
        problems = asyncio.run(_drive(urls, cases))
        for p, server in servers.items():
            if not server.matched:
                problems.extend(f"orders -> {p}: mock server: {m}" for m in server.mismatches)
    if problems:
        raise ConsumerFailed("; ".join(problems))
    written = []
    for p, pact in pacts.items():
        pact.write_file(pact_dir, overwrite=True)
        written.append(pact_dir / f"{CONSUMER}-{p}.json")
    return written
