"""`python -m services.identity init [--seed-dev]` and `rotate-keys`."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from services.identity.__main__ import main
from services.identity.app import create_app
from services.identity.entrypoints.deps import deps
from services.identity.settings import IdentitySettings

from .helpers import cc_token


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Defaults are relative to the working directory; run from a temporary one."""
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith(("IDENTITY_", "PORTICO_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("IDENTITY_DEV_REDIRECT_URIS", "http://127.0.0.1:9999/cb")
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, object]:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def token_works(credentials: dict[str, str]) -> bool:
    app = create_app(IdentitySettings.from_env())
    try:
        cc_token(app.test_client(), credentials)
        return True
    finally:
        deps(app).engine.dispose()


def test_init_seed_dev_is_idempotent_and_keeps_working_credentials(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = run(capsys, "init", "--seed-dev")
    assert first["created_key"]
    creds_file = workdir / "var/dev-credentials.json"
    for path in (
        creds_file,
        workdir / "var/identity/signing-keys.json",
        workdir / "var/identity/secret-key",
    ):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert (workdir / "var/identity/identity.db").exists()
    creds = json.loads(creds_file.read_text())
    assert set(creds) == {
        "client_id",
        "client_secret",
        "username",
        "password",
        "public_client_id",
        "redirect_uri",
        "scope",
    }
    assert creds["client_id"] == "portico-dev" and creds["public_client_id"] == "portico-public"
    assert creds["redirect_uri"] == "http://127.0.0.1:8765/callback"
    assert set(creds["scope"].split()) >= {"catalog:read", "orders:write", "notifications:read"}

    second = run(capsys, "init", "--seed-dev")
    assert second["created_key"] is None
    assert second["credentials_written"] is False
    assert json.loads(creds_file.read_text()) == creds
    assert token_works(creds)

    # The file is lost: the secret is reset and a working file written again.
    creds_file.unlink()
    run(capsys, "init", "--seed-dev")
    renewed = json.loads(creds_file.read_text())
    assert renewed["client_secret"] != creds["client_secret"]
    assert token_works(renewed)
    assert not token_works_safely(creds)


def token_works_safely(credentials: dict[str, str]) -> bool:
    try:
        return token_works(credentials)
    except AssertionError:
        return False


def test_dev_redirect_uris_from_the_environment(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from sqlalchemy.orm import Session

    from chassis import create_db_engine
    from services.identity.adapters.orm import Client

    run(capsys, "init", "--seed-dev")
    engine = create_db_engine(IdentitySettings.from_env().database_url)
    try:
        with Session(engine) as session:
            for client_id in ("portico-dev", "portico-public"):
                uris = session.get(Client, client_id).redirect_uris.split()  # type: ignore[union-attr]
                assert uris == ["http://127.0.0.1:8765/callback", "http://127.0.0.1:9999/cb"]
    finally:
        engine.dispose()


def test_rotate_keys_adds_a_delayed_key(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, "init")
    assert not (workdir / "var/dev-credentials.json").exists()
    out = run(capsys, "rotate-keys")
    doc = json.loads((workdir / "var/identity/signing-keys.json").read_text())
    assert [k["kid"] for k in doc["keys"]][-1] == out["kid"]
    assert doc["keys"][0]["retired_at"] == out["activates_at"]
    assert float(out["activates_at"]) - doc["keys"][-1]["created_at"] == pytest.approx(15.0)


def test_bad_configuration_is_reported(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("IDENTITY_ACCESS_TOKEN_TTL", "soon")
    assert main(["init"]) == 2
    assert "IDENTITY_ACCESS_TOKEN_TTL" in capsys.readouterr().err


def test_activation_delay_must_exceed_the_verifiers_refetch_interval() -> None:
    from chassis import ConfigError
    from services.identity.settings import IdentitySettings

    env = {"IDENTITY_KEY_ACTIVATION_DELAY": "5", "PORTICO_JWKS_REFETCH_INTERVAL": "10"}
    with pytest.raises(ConfigError, match="IDENTITY_KEY_ACTIVATION_DELAY=5 must exceed"):
        IdentitySettings.from_env(env)
    ok = IdentitySettings.from_env({**env, "IDENTITY_KEY_ACTIVATION_DELAY": "11"})
    assert ok.key_activation_delay == 11
