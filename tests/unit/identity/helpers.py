"""OAuth client-side steps for the tests, done the way the e2e test does them."""

from __future__ import annotations

import base64
import hashlib
import re
import secrets
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from flask.testing import FlaskClient
from werkzeug.test import TestResponse


def basic(client_id: str, secret: str) -> dict[str, str]:
    raw = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return {"Authorization": f"Basic {raw}"}


def cc_token(
    client: FlaskClient, creds: dict[str, str], scope: str | None = None
) -> dict[str, Any]:
    form = {"grant_type": "client_credentials"}
    if scope:
        form["scope"] = scope
    resp = client.post(
        "/oauth/token", data=form, headers=basic(creds["client_id"], creds["client_secret"])
    )
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.get_json()  # type: ignore[no-any-return]


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def authorize_url(client_id: str, redirect_uri: str, **extra: str) -> str:
    params = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": "profile catalog:read",
        "state": "st-123",
        **extra,
    }
    return "/oauth/authorize?" + urlencode(params)


def csrf_token(page: TestResponse) -> str:
    html = page.get_data(as_text=True)
    match = re.search(r'name="csrf_token" type="hidden" value="([^"]+)"', html) or re.search(
        r'value="([^"]+)"[^>]*name="csrf_token"', html
    )
    assert match, html
    return match.group(1)


def submit(
    client: FlaskClient, url: str, username: str, password: str, confirm: str = "yes", **kw: Any
) -> TestResponse:
    """GET the page, then POST the form back to the same URL with the same cookies."""
    page = client.get(url, **kw)
    assert page.status_code == 200, page.get_data(as_text=True)
    form = {
        "csrf_token": csrf_token(page),
        "username": username,
        "password": password,
        "confirm": confirm,
    }
    return client.post(url, data=form, **kw)


def redirect_params(resp: TestResponse) -> dict[str, str]:
    assert resp.status_code == 302, resp.get_data(as_text=True)
    query = parse_qs(urlsplit(resp.headers["Location"]).query)
    return {k: v[0] for k, v in query.items()}


def login_for_code(
    client: FlaskClient, creds: dict[str, str], client_id: str | None = None
) -> tuple[str, str]:
    """Run login + consent with PKCE; returns (code, code_verifier)."""
    verifier, challenge = pkce()
    url = authorize_url(
        client_id or creds["client_id"],
        creds["redirect_uri"],
        code_challenge=challenge,
        code_challenge_method="S256",
    )
    params = redirect_params(submit(client, url, creds["username"], creds["password"]))
    assert params["state"] == "st-123"
    return params["code"], verifier
