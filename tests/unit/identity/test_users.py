"""`/api/v1/users`: registration, validation, hashing, and `me`."""

from __future__ import annotations

import secrets
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from chassis import create_db_engine
from services.identity.adapters.orm import Client, User
from services.identity.app import create_app
from services.identity.domain import scopes
from services.identity.domain.passwords import Passwords
from services.identity.entrypoints.deps import deps
from services.identity.entrypoints.users import READ_ALL
from services.identity.settings import IdentitySettings

from .helpers import basic, cc_token, login_for_code

NEW = {"username": "Alice", "email": "alice@example.com", "password": "correct horse battery"}


def test_register_returns_201_with_location_and_hashes_the_password(
    client: FlaskClient, app: Flask
) -> None:
    resp = client.post("/api/v1/users", json=NEW)
    assert resp.status_code == 201, resp.get_json()
    body = resp.get_json()
    assert body["username"] == "alice"
    assert body["email"] == NEW["email"]
    assert "password" not in body and "password_hash" not in body
    assert resp.headers["Location"] == f"/api/v1/users/{body['id']}"

    with deps(app).sessions() as session:
        user = session.scalars(select(User).where(User.username == "alice")).one()
    assert user.password_hash.startswith("$argon2id$")
    assert NEW["password"] not in user.password_hash
    assert Passwords().verify(user.password_hash, NEW["password"])
    assert not Passwords().verify(user.password_hash, "wrong")


def test_duplicate_username_is_409_problem_whatever_the_case(client: FlaskClient) -> None:
    assert client.post("/api/v1/users", json=NEW).status_code == 201
    again = client.post("/api/v1/users", json={**NEW, "username": "ALICE"})
    assert again.status_code == 409
    assert again.mimetype == "application/problem+json"


@pytest.mark.parametrize(
    ("body", "fields"),
    [
        ({}, {"username", "email", "password"}),
        ({**NEW, "email": "not-an-email"}, {"email"}),
        ({**NEW, "password": "short"}, {"password"}),
        ({**NEW, "username": "a b"}, {"username"}),
        ({**NEW, "username": "x"}, {"username"}),
        ({**NEW, "admin": True}, {"admin"}),
    ],
)
def test_invalid_registration_is_422_naming_the_fields(
    client: FlaskClient, body: dict[str, object], fields: set[str]
) -> None:
    resp = client.post("/api/v1/users", json=body)
    assert resp.status_code == 422
    assert resp.mimetype == "application/problem+json"
    assert set(resp.get_json()["errors"]) == fields


def test_registration_needs_json(client: FlaskClient) -> None:
    resp = client.post("/api/v1/users", data="username=x")
    assert resp.status_code == 415
    assert resp.mimetype == "application/problem+json"


def test_registered_user_can_sign_in(client: FlaskClient, creds: dict[str, str]) -> None:
    assert client.post("/api/v1/users", json=NEW).status_code == 201
    code, verifier = login_for_code(
        client, {**creds, "username": "alice", "password": NEW["password"]}
    )
    resp = client.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": verifier,
            "redirect_uri": creds["redirect_uri"],
        },
        headers=basic(creds["client_id"], creds["client_secret"]),
    )
    token = resp.get_json()["access_token"]
    me = client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
    assert me.get_json()["username"] == "alice"
    own = client.get(
        f"/api/v1/users/{me.get_json()['id']}", headers={"Authorization": f"Bearer {token}"}
    )
    assert own.status_code == 200
    other = client.get("/api/v1/users/" + "0" * 32, headers={"Authorization": f"Bearer {token}"})
    assert other.status_code == 404


def test_me_needs_a_token(client: FlaskClient) -> None:
    resp = client.get("/api/v1/users/me")
    assert resp.status_code == 401
    assert resp.mimetype == "application/problem+json"
    assert resp.headers["WWW-Authenticate"].startswith("Bearer")


def test_me_needs_the_profile_scope(client: FlaskClient, creds: dict[str, str]) -> None:
    token = cc_token(client, creds, scope="catalog:read")["access_token"]
    resp = client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 403
    assert 'error="insufficient_scope"' in resp.headers["WWW-Authenticate"]


def test_me_with_a_client_credentials_token_is_403(
    client: FlaskClient, creds: dict[str, str]
) -> None:
    token = cc_token(client, creds)["access_token"]  # has `profile`, but no user
    resp = client.get("/api/v1/users/me", headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 403
    assert resp.mimetype == "application/problem+json"
    assert resp.get_json()["type"].endswith("/user-token-required")


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 10_000 + b"]" * 10_000,  # RecursionError, a 500, on main
        b'{"username": "\\ud800lice", "email": "a@example.com", "password": "correct horse"}',
    ],
)
def test_unreadable_registration_json_is_400_problem(client: FlaskClient, raw: bytes) -> None:
    resp = client.post("/api/v1/users", data=raw, headers={"Content-Type": "application/json"})
    assert resp.status_code == 400, resp.get_data(as_text=True)
    assert resp.mimetype == "application/problem+json"


def test_username_must_match_in_full(client: FlaskClient) -> None:
    resp = client.post("/api/v1/users", json={**NEW, "username": "alice\n"})
    assert resp.status_code == 422 and "username" in resp.get_json()["errors"]


def test_a_user_record_is_its_owners_or_a_users_read_all_tokens(
    settings: IdentitySettings, creds: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two users: each reads only their own `/users/<id>` (the other's is 404, exactly as a
    missing one); a token holding users:read:all (staff, or the dev client) reads either."""
    # The staff scope is identity's (roles work) and the dev client's; ensured for this test.
    if READ_ALL not in scopes.SUPPORTED:
        monkeypatch.setattr(scopes, "SUPPORTED", (*scopes.SUPPORTED, READ_ALL))
    engine = create_db_engine(settings.database_url)
    with Session(engine) as session:
        dev = session.get(Client, creds["client_id"])
        assert dev is not None
        if READ_ALL not in dev.scope.split():
            dev.scope = f"{dev.scope} {READ_ALL}"
        session.commit()
    engine.dispose()
    app = create_app(settings)
    try:
        client = app.test_client()
        ids, tokens = {}, {}
        for name in ("alice", "bob"):
            password = f"pw-{secrets.token_urlsafe(12)}"  # never containing the username
            body = {"username": name, "email": f"{name}@example.com", "password": password}
            ids[name] = client.post("/api/v1/users", json=body).get_json()["id"]
            code, verifier = login_for_code(
                client, {**creds, "username": name, "password": password}
            )
            resp = client.post(
                "/oauth/token",
                data={
                    "grant_type": "authorization_code",
                    "code": code,
                    "code_verifier": verifier,
                    "redirect_uri": creds["redirect_uri"],
                    "scope": "profile",
                },
                headers=basic(creds["client_id"], creds["client_secret"]),
            )
            tokens[name] = {"Authorization": f"Bearer {resp.get_json()['access_token']}"}

        def get(user_id: str, headers: dict[str, str]) -> Any:
            return client.get(f"/api/v1/users/{user_id}", headers=headers)

        assert get(ids["alice"], tokens["alice"]).get_json()["username"] == "alice"
        other, missing = get(ids["bob"], tokens["alice"]), get("0" * 32, tokens["alice"])
        assert other.status_code == missing.status_code == 404
        assert other.get_json()["detail"] == missing.get_json()["detail"]
        assert get(ids["alice"], tokens["bob"]).status_code == 404

        granted = cc_token(client, creds)  # the dev client's every scope
        assert READ_ALL in granted["scope"].split()
        staff = {"Authorization": f"Bearer {granted['access_token']}"}
        for name in ("alice", "bob"):
            resp = get(ids[name], staff)
            assert resp.status_code == 200 and resp.get_json()["username"] == name
        assert get("0" * 32, staff).status_code == 404
        # without the staff scope a client's token is no user: 403, as for /me
        plain = cc_token(client, creds, scope="profile")["access_token"]
        resp = get(ids["alice"], {"Authorization": f"Bearer {plain}"})
        assert resp.status_code == 403
    finally:
        deps(app).engine.dispose()
