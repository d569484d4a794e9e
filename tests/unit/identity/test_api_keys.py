"""`python -m services.identity api-keys ...` and `/internal/v1/api-keys` (ADR 0036) against a
throwaway SQLite database: keys shown once and stored as digests, scopes capped by the owner,
rotation and revocation seen by the feed and the key-for-token exchange."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from chassis import TokenPolicy, TokenVerifier
from services.identity.__main__ import main
from services.identity.app import create_app
from services.identity.entrypoints.deps import deps
from services.identity.settings import IdentitySettings

INTERNAL = "i" * 40
PASSWORD = "a sturdy passphrase 7391"
KEY = re.compile(r"pk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})\Z")


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith(("IDENTITY_", "PORTICO_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("IDENTITY_INTERNAL_SECRET", INTERNAL)
    return tmp_path


def run(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *argv: str
) -> tuple[int, Any, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(PASSWORD + "\n"))
    code = main(list(argv))
    out = capsys.readouterr()
    return code, json.loads(out.out) if code == 0 else None, out.err


@pytest.fixture
def cli(workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Any:
    def call(*argv: str) -> Any:
        code, doc, err = run(capsys, monkeypatch, *argv)
        assert code == 0, err
        return doc

    call.status = lambda *argv: run(capsys, monkeypatch, *argv)  # type: ignore[attr-defined]
    call("init", "--seed-dev")
    call("users", "add", "alice")
    return call


@pytest.fixture
def web(cli: Any) -> Iterator[FlaskClient]:
    app = create_app(IdentitySettings.from_env())
    yield app.test_client()
    deps(app).engine.dispose()


def _feed(web: FlaskClient, token: str | None = INTERNAL) -> Any:
    headers = {"X-Internal-Token": token} if token is not None else {}
    return web.get("/internal/v1/api-keys", headers=headers)


def _exchange(web: FlaskClient, key: str) -> Any:
    return web.post(
        "/internal/v1/api-keys/token", headers={"X-Internal-Token": INTERNAL, "X-API-Key": key}
    )


def test_create_shows_the_key_once_and_stores_only_its_digest(cli: Any, workdir: Path) -> None:
    out = cli(
        "api-keys", "create", "--owner", "user:alice", "--scopes", "catalog:read orders:read",
        "--class", "partners", "--name", "ci job",
    )  # fmt: skip
    found = KEY.match(out["api_key"])
    assert found is not None and out["id"] == found.group(1)
    assert out["owner"] == "user:alice" and out["class"] == "partners"
    assert out["scopes"] == ["catalog:read", "orders:read"]
    secret = found.group(2)
    stored = b"".join(p.read_bytes() for p in workdir.rglob("*.db*"))
    assert secret.encode() not in stored and out["api_key"].encode() not in stored
    assert hashlib.sha256(secret.encode()).hexdigest().encode() in stored
    listed = cli("api-keys", "list")["api_keys"]
    assert [k["id"] for k in listed] == [out["id"]]
    assert secret not in json.dumps(listed) and "hash" not in json.dumps(listed)


def test_scopes_are_capped_by_the_owner(cli: Any) -> None:
    code, _, err = cli.status(
        "api-keys", "create", "--owner", "user:alice", "--scopes", "catalog:read catalog:write"
    )
    assert code == 1 and "catalog:write" in err and "catalog:read " not in err
    code, _, err = cli.status("api-keys", "create", "--owner", "user:nobody", "--scopes", "x")
    assert code == 1 and "no user nobody" in err
    code, _, err = cli.status("api-keys", "create", "--owner", "alice", "--scopes", "catalog:read")
    assert code == 1 and "user:<username> or client:<client_id>" in err
    code, _, err = cli.status(
        "api-keys", "create", "--owner", "user:alice", "--scopes", "catalog:read", "--class", "a b"
    )
    assert code == 1 and "--class" in err


def test_a_client_key_is_capped_by_the_clients_scopes(cli: Any) -> None:
    clients = {c["client_id"]: c for c in cli("clients", "list")["clients"]}
    client_id, client = next((k, c) for k, c in clients.items() if c["scope"])
    allowed = client["scope"].split()[0]
    out = cli("api-keys", "create", "--owner", f"client:{client_id}", "--scopes", allowed)
    assert out["owner"] == f"client:{client_id}"
    missing = next(s for s in ("users:read:all", "catalog:write") if s not in client["scope"])
    code, _, err = cli.status(
        "api-keys", "create", "--owner", f"client:{client_id}", "--scopes", missing
    )
    assert code == 1 and missing in err


def test_the_feed_needs_the_internal_secret(cli: Any, web: FlaskClient) -> None:
    cli("api-keys", "create", "--owner", "user:alice", "--scopes", "catalog:read")
    assert _feed(web, None).status_code == 401
    assert _feed(web, "wrong" * 10).status_code == 404
    resp = _feed(web)
    assert resp.status_code == 200
    [key] = resp.get_json()["keys"]
    assert set(key) == {
        "id", "hash", "scopes", "class", "subject", "client_id", "version", "revoked",
    }  # fmt: skip
    assert key["class"] == "authenticated" and key["version"] == 1 and not key["revoked"]


def test_the_feed_is_off_without_the_setting(
    cli: Any, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("IDENTITY_INTERNAL_SECRET")
    app = create_app(IdentitySettings.from_env())
    try:
        assert _feed(app.test_client()).status_code == 404
    finally:
        deps(app).engine.dispose()


def test_a_key_is_exchanged_for_a_token_of_its_owner(cli: Any, web: FlaskClient) -> None:
    key = cli("api-keys", "create", "--owner", "user:alice", "--scopes", "catalog:read")
    resp = _exchange(web, key["api_key"])
    assert resp.status_code == 200, resp.get_data(as_text=True)
    doc = resp.get_json()
    settings = deps(web.application).settings
    verifier = TokenVerifier(
        TokenPolicy(issuer=settings.tokens.issuer, audience=settings.tokens.audience),
        deps(web.application).keystore.jwks,
    )
    claims = verifier.verify(doc["access_token"])
    assert claims.scopes == {"catalog:read"}
    assert claims.subject and claims.subject != "alice"  # the owner's user id, not her name
    assert claims.client_id == f"apikey:{key['id']}" and claims.raw["api_key"] == key["id"]
    assert doc["expires_in"] == settings.api_key_token_ttl
    assert _exchange(web, key["api_key"][:-3] + "AAA").status_code == 401


def test_rotate_and_revoke(cli: Any, web: FlaskClient) -> None:
    first = cli("api-keys", "create", "--owner", "user:alice", "--scopes", "catalog:read")
    rotated = cli("api-keys", "rotate", first["id"])
    assert rotated["id"] == first["id"] and rotated["api_key"] != first["api_key"]
    assert rotated["version"] == 2
    assert _exchange(web, first["api_key"]).status_code == 401
    assert _exchange(web, rotated["api_key"]).status_code == 200
    revoked = cli("api-keys", "revoke", first["id"])
    assert revoked["revoked"] is True and revoked["version"] == 3
    assert _exchange(web, rotated["api_key"]).status_code == 401
    [key] = _feed(web).get_json()["keys"]
    assert key["revoked"] is True and key["version"] == 3
    code, _, err = cli.status("api-keys", "rotate", first["id"])
    assert code == 1 and "revoked" in err
    code, _, err = cli.status("api-keys", "revoke", "0" * 16)
    assert code == 1 and "no API key" in err


def test_the_keys_token_reads_the_owners_profile_until_the_key_is_revoked(
    cli: Any, web: FlaskClient
) -> None:
    key = cli("api-keys", "create", "--owner", "user:alice", "--scopes", "profile")
    token = _exchange(web, key["api_key"]).get_json()["access_token"]
    bearer = {"Authorization": f"Bearer {token}"}
    me = web.get("/api/v1/users/me", headers=bearer)
    assert me.status_code == 200 and me.get_json()["username"] == "alice"
    cli("api-keys", "revoke", key["id"])
    assert web.get("/api/v1/users/me", headers=bearer).status_code == 401
