"""The critical finding of issue 15, replayed against the running stack through the gateway:
anyone could register, sign in through `portico-public`, receive `catalog:write` and reprice
the catalog. Now a registered user is a customer and the token lacks it; a staff user made by
identity's command line gets it.
"""

from __future__ import annotations

import re
import subprocess
import sys
import uuid
from urllib.parse import parse_qs, urlsplit

import jwt
import requests
from authlib.common.security import generate_token
from authlib.integrations.requests_client import OAuth2Session

from tools.stack import Stack


def _sign_in(gateway: str, creds: dict[str, str], username: str, password: str) -> str:
    """authorization_code + PKCE through portico-public asking for catalog:write, as the
    attacker did; the access token."""
    client = OAuth2Session(
        creds["public_client_id"],
        scope="catalog:read catalog:write",
        redirect_uri=creds["redirect_uri"],
        code_challenge_method="S256",
        token_endpoint_auth_method="none",
    )
    verifier = generate_token(48)
    url, state = client.create_authorization_url(
        f"{gateway}/oauth/authorize", code_verifier=verifier
    )
    page = client.get(url, withhold_token=True)
    assert page.status_code == 200, page.text
    csrf = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page.text) or re.search(
        r'value="([^"]+)"[^>]*name="csrf_token"', page.text
    )
    assert csrf
    form = {"csrf_token": csrf.group(1), "username": username, "password": password}
    done = client.post(
        url, data={**form, "confirm": "yes"}, allow_redirects=False, withhold_token=True
    )
    assert done.status_code in (302, 303), done.text
    assert parse_qs(urlsplit(done.headers["Location"]).query)["state"] == [state]
    token = client.fetch_token(
        f"{gateway}/oauth/token",
        authorization_response=done.headers["Location"],
        code_verifier=verifier,
    )
    return str(token["access_token"])


def _scopes(access_token: str) -> set[str]:
    claims = jwt.decode(access_token, options={"verify_signature": False})
    return set(claims["scope"].split())


def test_a_registered_user_cannot_write_the_catalog(gateway: str, creds: dict[str, str]) -> None:
    username, password = f"u{uuid.uuid4().hex[:10]}", "correct horse battery staple"
    registered = requests.post(
        f"{gateway}/api/v1/users",
        json={"username": username, "email": f"{username}@example.com", "password": password},
        timeout=10,
    )
    assert registered.status_code == 201, registered.text
    access = _sign_in(gateway, creds, username, password)
    assert _scopes(access) == {"catalog:read"}
    headers = {"Authorization": f"Bearer {access}"}
    products = requests.get(f"{gateway}/api/v1/products", headers=headers, timeout=10)
    assert products.status_code == 200, products.text
    product = products.json()["items"][0]
    reprice = requests.patch(
        f"{gateway}/api/v1/products/{product['id']}",
        json={"price": "0.01"},
        headers=headers,
        timeout=10,
    )
    assert reprice.status_code == 403, reprice.text
    again = requests.get(f"{gateway}/api/v1/products/{product['id']}", headers=headers, timeout=10)
    assert again.json()["price"] == product["price"]


def test_a_staff_user_made_on_the_command_line_gets_catalog_write(
    gateway: str, stack: Stack, creds: dict[str, str]
) -> None:
    username, password = f"s{uuid.uuid4().hex[:10]}", "staff passphrase 42"
    made = subprocess.run(
        [sys.executable, "-m", "services.identity", "users", "add", username, "--role", "staff"],
        cwd=stack.workdir,
        env=stack.env(),
        input=password + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    assert _scopes(_sign_in(gateway, creds, username, password)) == {
        "catalog:read",
        "catalog:write",
    }
