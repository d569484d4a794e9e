"""identity's command line and roles against a throwaway PostgreSQL database (issue 15, items
1 and 3-5): a clients file with a secret file applied by `init`, a token as orders-service,
secret rotation with overlap, a staff user made by `users add`, and the column upgrade of a
database made before roles existed.
"""

from __future__ import annotations

import io
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import create_engine, inspect, text

from services.identity.__main__ import main
from services.identity.app import create_app
from services.identity.entrypoints.deps import deps
from services.identity.settings import IdentitySettings
from tests.unit.identity.helpers import authorize_url, basic, pkce, redirect_params, submit

pytestmark = pytest.mark.postgres

ORDERS_SECRET = "orders-" + "p" * 40
REDIRECT = "https://shop.example/callback"
CLIENTS = f"""\
clients:
  - client_id: orders-service
    name: Orders saga
    grant_types: [client_credentials]
    scope: "catalog:read inventory:write payments:write"
    token_endpoint_auth_method: client_secret_basic
    redirect_uris: []
    secret_file: {{secret}}
  - client_id: shop-web
    name: Shop front
    grant_types: [authorization_code, refresh_token]
    scope: "catalog:read catalog:write profile orders:read orders:write"
    token_endpoint_auth_method: none
    redirect_uris: ["{REDIRECT}"]
"""


@pytest.fixture
def env(
    postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith(("IDENTITY_", "PORTICO_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("IDENTITY_DATABASE_URL", postgres_url)
    secret = tmp_path / "run/secrets/orders_client_secret"
    secret.parent.mkdir(parents=True)
    secret.write_text(ORDERS_SECRET + "\n")
    clients = tmp_path / "clients.yaml"
    clients.write_text(CLIENTS.format(secret=secret))  # an absolute path, as mounted
    monkeypatch.setenv("IDENTITY_CLIENTS_FILE", str(clients))
    yield {"database_url": postgres_url}


def cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *argv: str, stdin: str = ""
) -> dict[str, Any]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    code = main(list(argv))
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)  # type: ignore[no-any-return]


@pytest.fixture
def make_app(env: dict[str, str]) -> Iterator[Any]:
    """Builds the app (after `init` made its key) and disposes of it afterwards."""
    made: list[Flask] = []

    def build() -> Flask:
        made.append(create_app(IdentitySettings.from_env()))
        return made[-1]

    yield build
    for application in made:
        deps(application).engine.dispose()


def cc_status(client: FlaskClient, client_id: str, secret: str) -> int:
    form = {"grant_type": "client_credentials"}
    return client.post("/oauth/token", data=form, headers=basic(client_id, secret)).status_code


def user_scope(client: FlaskClient, username: str, password: str, scope: str) -> set[str]:
    verifier, challenge = pkce()
    url = authorize_url(
        "shop-web", REDIRECT, scope=scope, code_challenge=challenge, code_challenge_method="S256"
    )
    code = redirect_params(submit(client, url, username, password))["code"]
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "code_verifier": verifier,
        "redirect_uri": REDIRECT,
        "client_id": "shop-web",
    }
    token = client.post("/oauth/token", data=form).get_json()
    claims = jwt.decode(token["access_token"], options={"verify_signature": False})
    return set(claims["scope"].split())


def test_clients_file_rotation_and_roles_on_postgres(
    env: dict[str, str],
    make_app: Any,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = cli(capsys, monkeypatch, "init")  # the clients file from IDENTITY_CLIENTS_FILE
    assert first["clients_applied"] == ["orders-service", "shop-web"]
    assert cli(capsys, monkeypatch, "init")["clients_applied"] == first["clients_applied"]
    client = make_app().test_client()

    resp = client.post(
        "/oauth/token",
        data={"grant_type": "client_credentials"},
        headers=basic("orders-service", ORDERS_SECRET),
    )
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert set(resp.get_json()["scope"].split()) == {
        "catalog:read",
        "inventory:write",
        "payments:write",
    }

    # Rotation with overlap, on a client added by the command line.
    old = cli(
        capsys, monkeypatch,
        "clients", "add", "reports", "--grant-types", "client_credentials", "--scope", "profile",
    )["client_secret"]  # fmt: skip
    new = cli(capsys, monkeypatch, "clients", "rotate-secret", "reports")["client_secret"]
    assert cc_status(client, "reports", old) == 200 and cc_status(client, "reports", new) == 200
    cli(capsys, monkeypatch, "clients", "rotate-secret", "reports", "--retire-previous")
    assert cc_status(client, "reports", old) == 401 and cc_status(client, "reports", new) == 200
    cli(capsys, monkeypatch, "clients", "remove", "reports")
    assert cc_status(client, "reports", new) == 401

    # Roles: a registered customer and a staff user through the same public client.
    body = {"username": "cust", "email": "c@example.com", "password": "a long passphrase"}
    assert client.post("/api/v1/users", json=body).status_code == 201
    asked = "catalog:read catalog:write profile"
    assert user_scope(client, "cust", "a long passphrase", asked) == {"catalog:read", "profile"}
    cli(capsys, monkeypatch, "users", "add", "staffer", "--role", "staff", stdin="staff pw 1234\n")
    assert user_scope(client, "staffer", "staff pw 1234", asked) == set(asked.split())


def test_init_refuses_a_database_from_before_roles(
    env: dict[str, str], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A users table from before roles lacks part of the baseline: `init` exits 1 naming
    `users.role` and leaves the table as it was (ADR 0019)."""
    old = create_engine(env["database_url"])
    try:
        with old.begin() as conn:
            conn.execute(
                text(
                    "CREATE TABLE users (id VARCHAR(32) PRIMARY KEY, username VARCHAR(64) UNIQUE,"
                    " email VARCHAR(254), password_hash VARCHAR(255), created_at FLOAT)"
                )
            )
            conn.execute(text("INSERT INTO users VALUES ('u1', 'old', 'o@x', 'h', 0)"))
        monkeypatch.setenv("IDENTITY_CLIENTS_FILE", "")
        assert main(["init"]) == 1
        assert "users.role" in capsys.readouterr().err
        assert set(inspect(old).get_table_names()) == {"users"}
        assert "role" not in {c["name"] for c in inspect(old).get_columns("users")}
    finally:
        old.dispose()
