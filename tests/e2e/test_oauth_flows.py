"""A real OAuth2 client library (Authlib's requests client) against the running stack,
through the gateway: client_credentials, authorization_code + PKCE through the login form,
refresh with rotation, then the products list."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session

from tests.support.waiting import wait_until
from tools.stack import Stack


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html) or re.search(
        r'value="([^"]+)"[^>]*name="csrf_token"', html
    )
    assert match, "the login form carries a CSRF token"
    return match.group(1)


def test_client_credentials_then_list_products(gateway: str, creds: dict[str, str]) -> None:
    client = OAuth2Session(creds["client_id"], creds["client_secret"], scope="catalog:read")
    token = client.fetch_token(f"{gateway}/oauth/token", grant_type="client_credentials")
    assert token["token_type"].lower() == "bearer"
    resp = client.get(f"{gateway}/api/v1/products", params={"limit": 5})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert len(body["items"]) == 5
    assert body["next_cursor"]
    more = client.get(f"{gateway}/api/v1/products", params={"cursor": body["next_cursor"]})
    assert more.status_code == 200
    first_ids = {p["id"] for p in body["items"]}
    assert not first_ids & {p["id"] for p in more.json()["items"]}


def _authorize(gateway: str, creds: dict[str, str], client: OAuth2Session, verifier: str) -> str:
    url, state = client.create_authorization_url(
        f"{gateway}/oauth/authorize", code_verifier=verifier
    )
    page = client.get(url, withhold_token=True)
    assert page.status_code == 200, page.text
    assert "text/html" in page.headers["Content-Type"]
    form = {
        "csrf_token": _csrf(page.text),
        "username": creds["username"],
        "password": creds["password"],
        "confirm": "yes",
    }
    done = client.post(url, data=form, allow_redirects=False, withhold_token=True)
    assert done.status_code in (302, 303), done.text
    location = done.headers["Location"]
    assert location.startswith(creds["redirect_uri"])
    assert parse_qs(urlsplit(location).query)["state"] == [state]
    return location


def test_authorization_code_with_pkce_then_refresh(gateway: str, creds: dict[str, str]) -> None:
    client = OAuth2Session(
        creds["client_id"],
        creds["client_secret"],
        scope="catalog:read profile",
        redirect_uri=creds["redirect_uri"],
        code_challenge_method="S256",
    )
    verifier = generate_token(48)
    location = _authorize(gateway, creds, client, verifier)
    token = client.fetch_token(
        f"{gateway}/oauth/token", authorization_response=location, code_verifier=verifier
    )
    assert token["refresh_token"]

    me = client.get(f"{gateway}/api/v1/users/me")
    assert me.status_code == 200, me.text
    assert me.json()["username"] == creds["username"]
    assert client.get(f"{gateway}/api/v1/products").status_code == 200

    old_refresh = token["refresh_token"]
    renewed = client.refresh_token(f"{gateway}/oauth/token", refresh_token=old_refresh)
    assert renewed["access_token"] != token["access_token"]
    assert renewed["refresh_token"] != old_refresh  # rotation
    reuse = requests.post(
        f"{gateway}/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": old_refresh},
        auth=(creds["client_id"], creds["client_secret"]),
        timeout=10,
    )
    assert reuse.status_code == 400
    assert reuse.json()["error"] == "invalid_grant"
    # RFC 9700: the reuse revoked the whole family, the renewed tokens included.
    assert client.get(f"{gateway}/api/v1/users/me").status_code == 401
    again = requests.post(
        f"{gateway}/oauth/token",
        data={"grant_type": "refresh_token", "refresh_token": renewed["refresh_token"]},
        auth=(creds["client_id"], creds["client_secret"]),
        timeout=10,
    )
    assert again.status_code == 400


def test_public_client_must_use_pkce(gateway: str, creds: dict[str, str]) -> None:
    client = OAuth2Session(
        creds["public_client_id"],
        scope="catalog:read",
        redirect_uri=creds["redirect_uri"],
        token_endpoint_auth_method="none",
    )
    url, _ = client.create_authorization_url(f"{gateway}/oauth/authorize")  # no PKCE
    resp = client.get(url, withhold_token=True, allow_redirects=False)
    assert resp.status_code in (302, 400)
    if resp.status_code == 302:
        assert "error=invalid_request" in resp.headers["Location"]


def test_request_id_is_echoed_and_reaches_the_service(gateway: str, stack: Stack) -> None:
    resp = requests.get(
        f"{gateway}/api/v1/products", headers={"X-Request-ID": "e2e-trace-42"}, timeout=10
    )
    assert resp.status_code == 401
    assert resp.headers["X-Request-ID"] == "e2e-trace-42"
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    assert resp.json()["correlation_id"] == "e2e-trace-42"


def test_request_id_reaches_catalog_logs(gateway: str, stack: Stack, creds: dict[str, str]) -> None:
    client = OAuth2Session(creds["client_id"], creds["client_secret"], scope="catalog:read")
    client.fetch_token(f"{gateway}/oauth/token", grant_type="client_credentials")
    # the product list is cached per consumer (gateway.yaml) and this client may have read it
    # in an earlier test: `no-cache` makes the gateway ask catalog, which is what is checked
    resp = client.get(
        f"{gateway}/api/v1/products",
        headers={"X-Request-ID": "e2e-trace-43", "Cache-Control": "no-cache"},
    )
    assert resp.status_code == 200
    assert resp.headers["X-Request-ID"] == "e2e-trace-43"
    assert resp.headers.get("X-Cache") != "HIT"
    log = stack.var / "log" / "catalog.log"
    wait_until(lambda: '"correlation_id":"e2e-trace-43"' in log.read_text(), 15, "catalog's line")


def test_gateway_health_and_metrics(gateway: str) -> None:
    assert requests.get(f"{gateway}/healthz", timeout=5).status_code == 200
    ready = requests.get(f"{gateway}/readyz", timeout=5)
    assert ready.status_code == 200, ready.text
    metrics = requests.get(f"{gateway}/metrics", timeout=5)
    assert "http_requests_total" in metrics.text


def test_unknown_path_is_a_problem(gateway: str) -> None:
    resp = requests.get(f"{gateway}/nope", timeout=5)
    assert resp.status_code == 404
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    assert resp.json()["status"] == 404
