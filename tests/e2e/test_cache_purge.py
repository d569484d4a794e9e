"""The user story of issue 16: "updates the product through the API and the next read is fresh
on every gateway process" - on the real stack (catalog under gunicorn, the broker of `make
up`), with a second gateway process next to the stack's own, each with its own in-memory
response cache.

The gateway that handles the PATCH drops its entry at once (RFC 9111 4.4); the other one
learns of the change only from catalog's `product.updated` event (outbox -> relay -> broker
-> its purge subscription), so without catalog's events its read stays stale for the
entry's whole freshness (60 s) and this test fails.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest
import requests

from tests.support.waiting import WaitTimeout, wait_until
from tools.stack import Stack, free_port

SCOPES = "catalog:read catalog:write"
DEADLINE = 20.0  # seconds for an event's way from catalog's commit to a purge


@pytest.fixture(scope="module")
def gateways(stack: Stack) -> Iterator[tuple[str, str]]:
    # its own memory store even where GATEWAY_REDIS_URL would share one; polled more than
    # the `api` rate limit allows (the stack's own gateway is polled gently: it is shared)
    env = {
        "GATEWAY_CACHE_STORE": "memory",
        "GATEWAY_RATE_LIMIT": "1000000",
        "GATEWAY_RATE_BURST": "1000000",
    }
    second = stack.add_gateway(free_port(), env=env)
    try:
        yield stack.gateway_url, second.url
    finally:
        stack.stop_processes([second], timeout=10)


@pytest.fixture(scope="module")
def api(gateways: tuple[str, str], creds: dict[str, str]) -> requests.Session:
    resp = requests.post(
        f"{gateways[0]}/oauth/token",
        data={"grant_type": "client_credentials", "scope": SCOPES},
        auth=(creds["client_id"], creds["client_secret"]),
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {resp.json()['access_token']}"
    return session


def _create(api: requests.Session, gateway: str, price: str) -> str:
    sku = f"PURGE-{uuid.uuid4().hex[:8].upper()}"
    body = {"sku": sku, "name": "Purged mug", "category": "kitchen", "price": price}
    key = {"Idempotency-Key": uuid.uuid4().hex}
    created = api.post(f"{gateway}/api/v1/products", json=body, headers=key, timeout=10)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


def _read(api: requests.Session, url: str) -> tuple[str, str]:
    """`X-Cache` and the price of a product read (or of a list's one product)."""
    resp = api.get(url, timeout=10)
    assert resp.status_code == 200, resp.text
    doc = resp.json()
    return resp.headers["X-Cache"], (doc["items"][0] if "items" in doc else doc)["price"]


def _cached_on_both(api: requests.Session, gateways: tuple[str, str], path: str) -> None:
    for gateway in gateways:
        _read(api, gateway + path)
        assert _read(api, gateway + path)[0] == "HIT", gateway


@pytest.fixture(scope="module")
def subscribed(api: requests.Session, gateways: tuple[str, str]) -> None:
    """Both gateways hear catalog's events: a probe product is changed (through the first)
    until the second's read of it is fresh - its purge subscription starts in the background
    after readiness, and an event published before it bound its queue is not its to hear."""
    first, second = gateways
    path = f"/api/v1/products/{_create(api, first, '1.00')}"
    _cached_on_both(api, gateways, path)
    cents = [100]

    def fresh() -> bool:
        cents[0] += 1
        price = f"{cents[0] // 100}.{cents[0] % 100:02d}"
        assert api.patch(first + path, json={"price": price}, timeout=10).status_code == 200
        try:
            wait_until(lambda: _read(api, second + path)[1] == price, 1.0, price, interval=0.05)
        except WaitTimeout:
            return False  # missed: change it again
        return True

    wait_until(fresh, 30.0, "the second gateway's purge subscription", interval=0)


@pytest.mark.usefixtures("subscribed")
def test_an_update_through_one_gateway_is_fresh_on_every_gateway(
    api: requests.Session, gateways: tuple[str, str]
) -> None:
    first, second = gateways
    product = _create(api, first, "5.00")
    path = f"/api/v1/products/{product}"
    listing = f"/api/v1/products?sku={api.get(first + path, timeout=10).json()['sku']}"
    _cached_on_both(api, gateways, path)
    _cached_on_both(api, gateways, listing)

    patched = api.patch(first + path, json={"price": "6.50"}, timeout=10)
    assert patched.status_code == 200 and patched.json()["price"] == "6.50"
    # the gateway that forwarded the write dropped its entry at once (RFC 9111 4.4)
    assert _read(api, first + path) == ("MISS", "6.50")

    def fresh(url: str) -> Callable[[], bool]:
        return lambda: _read(api, url)[1] == "6.50"

    # the other gateway, and both gateways' lists, by catalog's product.updated event
    wait_until(
        fresh(second + path), DEADLINE, "the product fresh on the second gateway", interval=0.2
    )
    for gateway in gateways:
        wait_until(
            fresh(gateway + listing), DEADLINE, f"the product list fresh on {gateway}", interval=0.2
        )
    assert _read(api, second + path)[0] == "HIT"  # cached again, with the new price
