"""Identity's key flows against PostgreSQL: init, register, client_credentials, introspect,
revoke, login + code + refresh rotation, and the replay defences (token families) under real
row locks.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from services.identity.app import create_app
from services.identity.entrypoints.deps import deps
from tests.unit.identity.conftest import make_settings, prepare
from tests.unit.identity.helpers import basic, cc_token, login_for_code

pytestmark = pytest.mark.postgres


@pytest.fixture
def creds(postgres_url: str, tmp_path: Path) -> dict[str, str]:
    settings = make_settings(tmp_path, database_url=postgres_url)
    prepare(settings, tmp_path / "dev-credentials.json")
    return prepare(settings, tmp_path / "dev-credentials.json")  # twice: init is idempotent


@pytest.fixture
def app(postgres_url: str, tmp_path: Path, creds: dict[str, str]) -> Iterator[Flask]:
    app = create_app(make_settings(tmp_path, database_url=postgres_url))
    yield app
    deps(app).engine.dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def test_register_token_introspect_revoke(client: FlaskClient, creds: dict[str, str]) -> None:
    user = {"username": "pg-user", "email": "pg@example.com", "password": "long enough pw"}
    created = client.post("/api/v1/users", json=user)
    assert created.status_code == 201
    assert client.post("/api/v1/users", json=user).status_code == 409

    access = cc_token(client, creds)["access_token"]
    auth = basic(creds["client_id"], creds["client_secret"])
    info = client.post("/oauth/introspect", data={"token": access}, headers=auth).get_json()
    assert info["active"] is True and info["sub"] == "portico-dev"

    assert client.post("/oauth/revoke", data={"token": access}, headers=auth).status_code == 200
    info = client.post("/oauth/introspect", data={"token": access}, headers=auth).get_json()
    assert info == {"active": False}
    assert client.get("/health/ready").status_code == 200


def test_code_flow_and_refresh_rotation(client: FlaskClient, creds: dict[str, str]) -> None:
    code, verifier = login_for_code(client, creds)
    auth = basic(creds["client_id"], creds["client_secret"])
    tokens = client.post(
        "/oauth/token",
        data={
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": verifier,
            "redirect_uri": creds["redirect_uri"],
        },
        headers=auth,
    ).get_json()
    me = client.get(
        "/api/v1/users/me", headers={"Authorization": f"Bearer {tokens['access_token']}"}
    )
    assert me.get_json()["username"] == "demo"
    form = {"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]}
    assert client.post("/oauth/token", data=form, headers=auth).status_code == 200
    assert client.post("/oauth/token", data=form, headers=auth).status_code == 400


def _exchange(client: FlaskClient, creds: dict[str, str], code: str, verifier: str) -> Any:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": verifier,
        "redirect_uri": creds["redirect_uri"],
    }
    auth = basic(creds["client_id"], creds["client_secret"])
    return client.post("/oauth/token", data=form, headers=auth)


def _active(client: FlaskClient, creds: dict[str, str], token: str) -> bool:
    auth = basic(creds["client_id"], creds["client_secret"])
    return bool(
        client.post("/oauth/introspect", data={"token": token}, headers=auth).json["active"]
    )


def test_refresh_reuse_revokes_the_family(client: FlaskClient, creds: dict[str, str]) -> None:
    code, verifier = login_for_code(client, creds)
    first = _exchange(client, creds, code, verifier).get_json()
    auth = basic(creds["client_id"], creds["client_secret"])
    form = {"grant_type": "refresh_token", "refresh_token": first["refresh_token"]}
    second = client.post("/oauth/token", data=form, headers=auth).get_json()
    reuse = client.post("/oauth/token", data=form, headers=auth)
    assert reuse.status_code == 400 and reuse.get_json()["error"] == "invalid_grant"
    assert not _active(client, creds, second["access_token"])
    bearer = {"Authorization": f"Bearer {second['access_token']}"}
    assert client.get("/api/v1/users/me", headers=bearer).status_code == 401


def test_concurrent_exchanges_of_one_code_issue_nothing_that_stays_valid(
    app: Flask, creds: dict[str, str]
) -> None:
    """Two exchanges of one code at once, on PostgreSQL's row locks: whichever interleaving
    happens, one gets tokens, the other `invalid_grant`, and the tokens end up revoked.
    """
    code, verifier = login_for_code(app.test_client(), creds)
    barrier = threading.Barrier(2)

    def attempt() -> Any:
        barrier.wait()
        return _exchange(app.test_client(), creds, code, verifier)

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda _: attempt(), range(2)))
    statuses = sorted(r.status_code for r in results)
    assert statuses == [200, 400], [r.get_json() for r in results]
    won = next(r for r in results if r.status_code == 200).get_json()
    lost = next(r for r in results if r.status_code == 400).get_json()
    assert lost["error"] == "invalid_grant"
    assert not _active(app.test_client(), creds, won["access_token"])
