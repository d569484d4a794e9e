"""API v1 and v2 of products side by side through the real stack (`make up`'s flags.yaml):
v2's price object, v1's Deprecation / Sunset / successor Link from gateway.yaml, the use of v1
counted per consumer on the gateway's /metrics, both versions in /openapi.json."""

from __future__ import annotations

import uuid
from email.utils import parsedate_to_datetime

import pytest
import requests

SCOPES = "catalog:read catalog:write"


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


def test_v1_and_v2_side_by_side(
    gateway: str, session: requests.Session, creds: dict[str, str]
) -> None:
    sku = f"VER-{uuid.uuid4().hex[:8].upper()}"
    body = {"sku": sku, "name": "Versioned mug", "category": "kitchen", "price": "9.9"}
    created = session.post(
        f"{gateway}/api/v1/products",
        json=body,
        headers={"Idempotency-Key": uuid.uuid4().hex},
        timeout=10,
    )
    assert created.status_code == 201, created.text
    pid = created.json()["id"]

    v2 = session.get(f"{gateway}/api/v2/products/{pid}", timeout=10)
    assert v2.status_code == 200, v2.text
    assert v2.json()["price"] == {"amount": "9.90", "currency": "EUR"}
    assert "deprecation" not in {k.lower() for k in v2.headers}
    page = session.get(f"{gateway}/api/v2/products", params={"sku": sku}, timeout=10)
    assert page.json()["items"][0]["price"] == {"amount": "9.90", "currency": "EUR"}

    v1 = session.get(f"{gateway}/api/v1/products/{pid}", timeout=10)
    assert v1.status_code == 200 and v1.json()["price"] == "9.90"
    assert v1.headers["Deprecation"].startswith("@")
    assert parsedate_to_datetime(v1.headers["Sunset"]).year >= 2027
    assert f'</api/v2/products/{pid}>; rel="successor-version"' in v1.headers["Link"]
    listing = session.get(f"{gateway}/api/v1/products", params={"sku": sku}, timeout=10)
    assert '</api/v2/products>; rel="successor-version"' in listing.headers["Link"]

    metrics = requests.get(f"{gateway}/metrics", timeout=10).text
    consumer = creds["client_id"]
    assert f'gateway_deprecated_requests_total{{consumer="{consumer}",route="products.get"}}' in (
        metrics
    )


def test_both_versions_in_openapi(gateway: str) -> None:
    doc = requests.get(f"{gateway}/openapi.json", timeout=10).json()
    paths = doc["paths"]
    v1_get = next(
        op for p, ops in paths.items() if p.startswith("/api/v1/products/") for op in [ops["get"]]
    )
    v2_get = next(
        op for p, ops in paths.items() if p.startswith("/api/v2/products/") for op in [ops["get"]]
    )
    assert v1_get["deprecated"] is True and paths["/api/v1/products"]["get"]["deprecated"] is True
    assert "deprecated" not in v2_get and "deprecated" not in paths["/api/v1/products"]["post"]
    assert "Sunset" in v1_get["responses"]["200"]["headers"]
