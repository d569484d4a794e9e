"""`/api/v1/users`: registration, validation, hashing, and `me`."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select

from services.identity.adapters.orm import User
from services.identity.domain.passwords import Passwords
from services.identity.entrypoints.context import EXTENSION

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

    with app.extensions[EXTENSION].sessions() as session:
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
