"""Roles cap user tokens (issue 15, items 1 and 3): a token's scopes are requested ∩ client's ∩
role's. Self-registered users are customers; staff come from the command line.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import sys
from collections.abc import Iterator
from typing import Any

import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from chassis import create_db_engine
from services.identity.__main__ import main
from services.identity.adapters.orm import User
from services.identity.domain import roles, scopes
from services.identity.domain.roles import CUSTOMER_SCOPES, Role, cap_scope
from services.identity.service_layer.clients import ClientSpec, upsert_client
from services.identity.settings import IdentitySettings

from .helpers import authorize_url, basic, cc_token, pkce, redirect_params, submit

ALL = " ".join(scopes.SUPPORTED)
STAFF_ONLY = {
    "catalog:write",
    "inventory:write",
    "payments:write",
    "orders:read:all",
    "payments:read:all",
    "notifications:read:all",
    "users:read:all",
    "reports:read",
    "orders:events",
}


@pytest.fixture
def cli(
    settings: IdentitySettings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Any:
    """`cli(*argv, stdin=...)`: identity's command line against the test's database."""
    for name in list(os.environ):
        if name.startswith(("IDENTITY_", "PORTICO_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("IDENTITY_DATABASE_URL", settings.database_url)
    monkeypatch.setenv("IDENTITY_KEYS_FILE", settings.keys_file)
    monkeypatch.setenv("IDENTITY_SECRET_KEY_FILE", settings.secret_key_file)

    def run(*argv: str, stdin: str = "") -> dict[str, Any]:
        monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = main(list(argv))
        out = capsys.readouterr()
        assert code == 0, out.err
        return json.loads(out.out)  # type: ignore[no-any-return]

    return run


@contextlib.contextmanager
def db_session(settings: IdentitySettings) -> Iterator[Session]:
    engine = create_db_engine(settings.database_url)
    try:
        with Session(engine) as session:
            yield session
    finally:
        engine.dispose()


def register(client: FlaskClient, username: str, password: str = "a long passphrase") -> str:
    body = {"username": username, "email": f"{username}@example.com", "password": password}
    resp = client.post("/api/v1/users", json=body)
    assert resp.status_code == 201, resp.get_data(as_text=True)
    return resp.get_json()["id"]  # type: ignore[no-any-return]


def user_tokens(
    client: FlaskClient,
    creds: dict[str, str],
    username: str,
    password: str,
    scope: str,
    public: bool = True,
) -> dict[str, Any]:
    """Sign in through the login + consent page with PKCE, exchange the code: the token JSON."""
    client_id = creds["public_client_id"] if public else creds["client_id"]
    verifier, challenge = pkce()
    url = authorize_url(
        client_id,
        creds["redirect_uri"],
        scope=scope,
        code_challenge=challenge,
        code_challenge_method="S256",
    )
    params = redirect_params(submit(client, url, username, password))
    assert "code" in params, params
    form = {
        "grant_type": "authorization_code",
        "code": params["code"],
        "code_verifier": verifier,
        "redirect_uri": creds["redirect_uri"],
    }
    headers: dict[str, str] = {}
    if public:
        form["client_id"] = client_id
    else:
        headers = basic(creds["client_id"], creds["client_secret"])
    resp = client.post("/oauth/token", data=form, headers=headers)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.get_json()  # type: ignore[no-any-return]


def claim_scopes(token: dict[str, Any]) -> set[str]:
    claims = jwt.decode(token["access_token"], options={"verify_signature": False})
    assert set(claims["scope"].split()) == set(token["scope"].split())
    return set(claims["scope"].split())


def test_registered_user_cannot_get_catalog_write_through_the_public_client(
    client: FlaskClient, creds: dict[str, str]
) -> None:
    """The critical finding, end to end in identity: register, sign in through portico-public
    asking for catalog:write -> the token must not carry it."""
    register(client, "mallory")
    token = user_tokens(client, creds, "mallory", "a long passphrase", "catalog:read catalog:write")
    assert claim_scopes(token) == {"catalog:read"}


def test_a_customer_asking_for_everything_gets_only_the_customer_scopes(
    client: FlaskClient, creds: dict[str, str]
) -> None:
    register(client, "carol")
    for public in (True, False):  # through the public and the (all-scope) dev client alike
        token = user_tokens(client, creds, "carol", "a long passphrase", ALL, public=public)
        granted = claim_scopes(token)
        assert granted == set(CUSTOMER_SCOPES)
        assert not granted & STAFF_ONLY
        # The refresh token cannot widen it either.
        form = {"grant_type": "refresh_token", "refresh_token": token["refresh_token"]}
        headers: dict[str, str] = {}
        if public:
            form["client_id"] = creds["public_client_id"]
        else:
            headers = basic(creds["client_id"], creds["client_secret"])
        refreshed = client.post("/oauth/token", data={**form, "scope": ALL}, headers=headers)
        assert refreshed.status_code == 400  # more than originally granted: invalid_scope
        refreshed = client.post("/oauth/token", data=form, headers=headers)
        assert claim_scopes(refreshed.get_json()) == set(CUSTOMER_SCOPES)


def test_the_demo_user_is_a_customer(client: FlaskClient, creds: dict[str, str]) -> None:
    token = user_tokens(client, creds, creds["username"], creds["password"], ALL, public=False)
    assert claim_scopes(token) == set(CUSTOMER_SCOPES)


def test_a_customer_asking_only_for_staff_scopes_is_told_invalid_scope(
    client: FlaskClient, creds: dict[str, str]
) -> None:
    register(client, "eve")
    _, challenge = pkce()
    url = authorize_url(
        creds["public_client_id"],
        creds["redirect_uri"],
        scope="catalog:write payments:read:all",
        code_challenge=challenge,
        code_challenge_method="S256",
    )
    params = redirect_params(submit(client, url, "eve", "a long passphrase"))
    assert params["error"] == "invalid_scope" and params["state"] == "st-123"
    assert "code" not in params


def test_registration_cannot_choose_a_role(client: FlaskClient, settings: IdentitySettings) -> None:
    body = {"username": "sneaky", "email": "s@example.com", "password": "a long passphrase"}
    resp = client.post("/api/v1/users", json={**body, "role": "admin"})
    assert resp.status_code == 422 and "role" in resp.get_json()["errors"]
    user_id = register(client, "honest")
    with db_session(settings) as session:
        assert session.get(User, user_id).role == "customer"  # type: ignore[union-attr]


def test_a_staff_user_gets_what_the_dev_client_gets(
    client: FlaskClient, creds: dict[str, str], cli: Any
) -> None:
    """Item 3: a staff user (made by the command line) signing in through portico-dev gets
    every scope the dev client itself can have."""
    made = cli("users", "add", "stella", "--role", "staff", stdin="staff passphrase\n")
    assert made["role"] == "staff" and made["username"] == "stella"
    token = user_tokens(client, creds, "stella", "staff passphrase", ALL, public=False)
    dev_client = set(cc_token(client, creds, ALL)["scope"].split())
    assert claim_scopes(token) == dev_client == set(scopes.SUPPORTED)
    assert (
        jwt.decode(token["access_token"], options={"verify_signature": False})["sub"]
        == (made["id"])
    )


def test_client_credentials_keep_the_clients_own_scopes(
    app: Flask, client: FlaskClient, settings: IdentitySettings
) -> None:
    """No user, no role: a service client gets its own list, staff-only writes included."""
    secret = "s" * 40
    with db_session(settings) as session:
        upsert_client(
            session,
            ClientSpec(
                client_id="svc",
                name="A service",
                grant_types=("client_credentials",),
                scope="catalog:read inventory:write payments:write",
                token_endpoint_auth_method="client_secret_basic",
                redirect_uris=(),
                secret=secret,
            ),
        )
        session.commit()
    token = cc_token(client, {"client_id": "svc", "client_secret": secret}, ALL)
    assert set(token["scope"].split()) == {"catalog:read", "inventory:write", "payments:write"}
    assert jwt.decode(token["access_token"], options={"verify_signature": False})["sub"] == "svc"


def test_a_demoted_users_next_refresh_loses_the_staff_scopes(
    client: FlaskClient, creds: dict[str, str], cli: Any
) -> None:
    cli("users", "add", "sam", "--role", "admin", stdin="admin passphrase\n")
    token = user_tokens(client, creds, "sam", "admin passphrase", "catalog:read catalog:write")
    assert claim_scopes(token) == {"catalog:read", "catalog:write"}
    assert cli("users", "set-role", "sam", "customer")["was"] == "admin"
    form = {
        "grant_type": "refresh_token",
        "refresh_token": token["refresh_token"],
        "client_id": creds["public_client_id"],
    }
    refreshed = client.post("/oauth/token", data=form)
    assert refreshed.status_code == 200
    assert claim_scopes(refreshed.get_json()) == {"catalog:read"}


def test_consent_page_shows_only_what_can_be_granted(
    app: Flask, client: FlaskClient, creds: dict[str, str], settings: IdentitySettings
) -> None:
    with db_session(settings) as session:
        upsert_client(
            session,
            ClientSpec(
                client_id="narrow",
                name="Narrow app",
                grant_types=("authorization_code",),
                scope="catalog:read catalog:write",
                token_endpoint_auth_method="none",
                redirect_uris=(creds["redirect_uri"],),
            ),
        )
        session.commit()
    _, challenge = pkce()
    asked = "catalog:read catalog:write orders:read payments:read:all"
    page = client.get(
        authorize_url(
            "narrow",
            creds["redirect_uri"],
            scope=asked,
            code_challenge=challenge,
            code_challenge_method="S256",
        )
    )
    html = page.get_data(as_text=True)
    assert page.status_code == 200
    # The client may not have orders:read or payments:read:all: not offered at all.
    assert "orders:read" not in html and "payments:read:all" not in html
    everyone, _, staff = html.partition("Only if you sign in with a staff account")
    assert "<code>catalog:read</code>" in everyone and "catalog:write" not in everyone
    assert "<code>catalog:write</code>" in staff and "catalog:read<" not in staff


def test_customer_consent_page_has_no_staff_section(
    client: FlaskClient, creds: dict[str, str]
) -> None:
    _, challenge = pkce()
    url = authorize_url(
        creds["public_client_id"],
        creds["redirect_uri"],
        scope="catalog:read profile",
        code_challenge=challenge,
        code_challenge_method="S256",
    )
    assert "staff account" not in client.get(url).get_data(as_text=True)


def test_cap_scope_rules() -> None:
    assert cap_scope("customer", ALL).split() == [
        s for s in scopes.SUPPORTED if s not in STAFF_ONLY
    ]
    assert cap_scope("staff", ALL) == cap_scope("admin", ALL) == ALL
    assert cap_scope("no-such-role", ALL) == ""  # a damaged row gets nothing
    assert cap_scope("customer", None) == ""
    assert {r.value for r in Role} == {"customer", "staff", "admin"}
    assert roles.allowed_scopes("customer") == CUSTOMER_SCOPES
    for scope in ("orders:read:all", "payments:read:all", "notifications:read:all"):
        assert scopes.describe(scope) != scope  # described on the consent page
    assert scopes.describe("users:read:all") != "users:read:all"
