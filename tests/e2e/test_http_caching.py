"""Conditional reads through the real stack: the gateway passes the services' ETag,
Cache-Control and bodiless 304s through, and an update through the API changes the tag."""

from __future__ import annotations

import uuid

import pytest
import requests

SCOPES = "catalog:read catalog:write inventory:read inventory:write"


@pytest.fixture(scope="module")
def session(gateway: str, creds: dict[str, str]) -> requests.Session:
    resp = requests.post(
        f"{gateway}/oauth/token",
        data={"grant_type": "client_credentials", "scope": SCOPES},
        auth=(creds["client_id"], creds["client_secret"]),
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {resp.json()['access_token']}"
    return s


def test_product_read_304_then_fresh_after_an_update(
    gateway: str, session: requests.Session
) -> None:
    sku = f"CACHE-{uuid.uuid4().hex[:8].upper()}"
    body = {"sku": sku, "name": "Cached mug", "category": "kitchen", "price": "5.00"}
    key = {"Idempotency-Key": uuid.uuid4().hex}
    created = session.post(f"{gateway}/api/v1/products", json=body, headers=key, timeout=10)
    assert created.status_code == 201, created.text
    url = f"{gateway}/api/v1/products/{created.json()['id']}"
    first = session.get(url, timeout=10)
    tag = first.headers["ETag"]
    assert first.status_code == 200 and tag == '"v1"'
    assert first.headers["Cache-Control"].startswith("public, max-age=")
    not_modified = session.get(url, headers={"If-None-Match": tag}, timeout=10)
    assert not_modified.status_code == 304 and not_modified.content == b""
    assert not_modified.headers["ETag"] == tag
    assert session.patch(url, json={"price": "6.00"}, timeout=10).status_code == 200
    fresh = session.get(url, headers={"If-None-Match": tag}, timeout=10)
    assert fresh.status_code == 200 and fresh.json()["price"] == "6.00"
    assert fresh.headers["ETag"] == '"v2"'


def test_stock_read_304_through_the_gateway(gateway: str, session: requests.Session) -> None:
    url = f"{gateway}/api/v1/inventory/BK-0001"
    first = session.get(url, timeout=10)
    assert first.status_code == 200 and first.headers["Cache-Control"] == "public, no-cache"
    again = session.get(url, headers={"If-None-Match": first.headers["ETag"]}, timeout=10)
    assert again.status_code == 304 and again.content == b""
