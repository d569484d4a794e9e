"""The aggregated endpoints through the real stack: an order's details and the dashboard.

A client_credentials token with every scope places an order, waits (bounded poll) until the
saga confirms it, then reads `/api/v1/orders/{id}/details` and `/api/v1/me/dashboard`. The
token does not speak for a user, so identity answers 403 for the profile: that optional part
is null, listed under `errors` with status 403, and the answer is marked partial. The demo
user, signed in, then orders too: each principal sees only their own order and payment.
"""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session

from tests.e2e.test_oauth_flows import _authorize
from tests.support.waiting import wait_until
from tools.stack import Stack

SCOPES = "catalog:read orders:read orders:write payments:read notifications:read profile"
SKUS = ["BK-0001", "EL-0001"]


def wait_for_status(session: requests.Session, url: str, timeout: float = 60) -> dict[str, Any]:
    def settled() -> dict[str, Any] | None:
        resp = session.get(url, timeout=10)
        assert resp.status_code == 200, resp.text
        order: dict[str, Any] = resp.json()
        return order if order["status"] in ("CONFIRMED", "REJECTED") else None

    what = f"{url} CONFIRMED or REJECTED"
    return wait_until(settled, timeout, what, interval=0.05, max_interval=0.5)


@pytest.fixture(scope="module")
def api(stack: Stack) -> requests.Session:
    creds = stack.credentials()
    resp = requests.post(
        f"{stack.gateway_url}/oauth/token",
        data={"grant_type": "client_credentials", "scope": SCOPES},
        auth=(creds["client_id"], creds["client_secret"]),
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {resp.json()['access_token']}"
    return session


@pytest.fixture(scope="module")
def confirmed_order(stack: Stack, api: requests.Session) -> dict[str, Any]:
    resp = api.post(
        f"{stack.gateway_url}/api/v1/orders",
        json={
            "items": [{"sku": sku, "quantity": 1} for sku in SKUS],
            "payment_method": "pm_card_ok",
        },
        headers={"Idempotency-Key": uuid.uuid4().hex},
        timeout=10,
    )
    assert resp.status_code == 202, resp.text
    order = wait_for_status(api, stack.gateway_url + resp.headers["Location"])
    assert order["status"] == "CONFIRMED", order
    return order


def _profile_refused(body: dict[str, Any], part: str) -> None:
    assert body[part] is None
    errors = {e["part"]: e for e in body["errors"]}
    assert errors[part]["status"] == 403, body["errors"]  # identity's own answer, kept


def test_order_details(
    stack: Stack, api: requests.Session, confirmed_order: dict[str, Any]
) -> None:
    resp = api.get(f"{stack.gateway_url}/api/v1/orders/{confirmed_order['id']}/details", timeout=10)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["order"]["id"] == confirmed_order["id"]
    assert [p["sku"] for p in body["products"]] == SKUS
    assert all(p["name"] for p in body["products"])
    assert body["payment"] is not None
    assert body["payment"]["id"] == confirmed_order["payment_id"]
    _profile_refused(body, "user")
    assert [e["part"] for e in body["errors"]] == ["user"]
    assert resp.headers["X-Portico-Partial"] == "true"


def test_details_of_an_unknown_order_is_404_naming_the_part(
    stack: Stack, api: requests.Session
) -> None:
    resp = api.get(f"{stack.gateway_url}/api/v1/orders/{uuid.uuid4()}/details", timeout=10)
    assert resp.status_code == 404, resp.text
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    assert resp.json()["part"] == "order"


def test_dashboard(stack: Stack, api: requests.Session, confirmed_order: dict[str, Any]) -> None:
    resp = api.get(f"{stack.gateway_url}/api/v1/me/dashboard", timeout=10)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert confirmed_order["id"] in [o["id"] for o in body["recent_orders"]]
    assert len(body["recent_orders"]) <= 5
    assert isinstance(body["unread_notifications"], list)
    _profile_refused(body, "profile")
    assert resp.headers["X-Portico-Partial"] == "true"


def test_aggregates_need_a_token(stack: Stack) -> None:
    resp = requests.get(f"{stack.gateway_url}/api/v1/me/dashboard", timeout=10)
    assert resp.status_code == 401


@pytest.fixture(scope="module")
def user_api(stack: Stack) -> requests.Session:
    """The demo user, signed in through the login and consent pages (a user token)."""
    creds = stack.credentials()
    client = OAuth2Session(
        creds["client_id"],
        creds["client_secret"],
        scope=SCOPES,
        redirect_uri=creds["redirect_uri"],
        code_challenge_method="S256",
    )
    verifier = generate_token(48)
    location = _authorize(stack.gateway_url, creds, client, verifier)
    client.fetch_token(
        f"{stack.gateway_url}/oauth/token", authorization_response=location, code_verifier=verifier
    )
    return client


def test_a_user_sees_their_own_payment_and_no_one_elses(
    stack: Stack,
    api: requests.Session,
    user_api: requests.Session,
    confirmed_order: dict[str, Any],
) -> None:
    """Two principals through the whole stack: the saga charges for the order's owner, so the
    user's own payment is in their order's details; the other's order and payment are 404 and
    never listed, whichever way round (neither token holds a `:read:all` scope)."""
    gw = stack.gateway_url
    resp = user_api.post(
        f"{gw}/api/v1/orders",
        json={"items": [{"sku": SKUS[0], "quantity": 1}], "payment_method": "pm_card_ok"},
        headers={"Idempotency-Key": uuid.uuid4().hex},
        timeout=10,
    )
    assert resp.status_code == 202, resp.text
    mine = wait_for_status(user_api, gw + resp.headers["Location"])
    assert mine["status"] == "CONFIRMED", mine
    details = user_api.get(f"{gw}/api/v1/orders/{mine['id']}/details", timeout=10).json()
    assert details["payment"] is not None and details["payment"]["id"] == mine["payment_id"]
    assert details["user"] is not None and details["errors"] == []
    listed = user_api.get(f"{gw}/api/v1/payments", timeout=10).json()["items"]
    assert [p["id"] for p in listed] == [mine["payment_id"]]

    for reader, theirs in ((api, mine), (user_api, confirmed_order)):
        for path in (f"orders/{theirs['id']}", f"payments/{theirs['payment_id']}"):
            assert reader.get(f"{gw}/api/v1/{path}", timeout=10).status_code == 404, path
        assert (
            reader.get(f"{gw}/api/v1/orders/{theirs['id']}/details", timeout=10).status_code == 404
        )
        payments = reader.get(f"{gw}/api/v1/payments", timeout=10).json()["items"]
        assert theirs["payment_id"] not in [p["id"] for p in payments]
        orders = reader.get(f"{gw}/api/v1/orders", timeout=10).json()["items"]
        assert theirs["id"] not in [o["id"] for o in orders]
