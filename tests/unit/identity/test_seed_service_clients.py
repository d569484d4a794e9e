"""`init --seed-dev`: the dev client gets every scope (the staff-only `:read:all` ones too), and
orders and views get their service clients.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from sqlalchemy.orm import Session

from chassis import create_db_engine
from services.identity.__main__ import main
from services.identity.adapters.orm import Client
from services.identity.app import create_app
from services.identity.entrypoints.deps import deps
from services.identity.service_layer.setup import DEV_SCOPE, ORDERS_SCOPE, VIEWS_SCOPE
from services.identity.settings import IdentitySettings

from .helpers import cc_token

ALL_SCOPES = {
    "catalog:read",
    "catalog:write",
    "profile",
    "orders:read",
    "orders:write",
    "inventory:read",
    "inventory:write",
    "payments:read",
    "payments:write",
    "notifications:read",
    "orders:read:all",
    "payments:read:all",
    "notifications:read:all",
    "users:read:all",
    "reports:read",
    "orders:events",
}


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith(("IDENTITY_", "PORTICO_")):
            monkeypatch.delenv(name)
    return tmp_path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, object]:
    assert main(list(argv)) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def granted(credentials: dict[str, str], scope: str | None = None) -> set[str]:
    app = create_app(IdentitySettings.from_env())
    try:
        return set(cc_token(app.test_client(), credentials, scope)["scope"].split())
    finally:
        deps(app).engine.dispose()


def test_dev_client_may_obtain_every_scope(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "init", "--seed-dev")
    creds = json.loads((workdir / "var/dev-credentials.json").read_text())
    assert set(creds["scope"].split()) == ALL_SCOPES == set(DEV_SCOPE.split())
    assert granted(creds, " ".join(sorted(ALL_SCOPES))) == ALL_SCOPES


def test_rerun_widens_an_older_dev_clients_scope(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, "init", "--seed-dev")
    engine = create_db_engine(IdentitySettings.from_env().database_url)
    try:
        with Session(engine) as session:  # as seeded before orders existed
            client = session.get(Client, "portico-dev")
            assert client is not None
            client.scope = "catalog:read catalog:write profile"
            session.commit()
        run(capsys, "init", "--seed-dev")
        with Session(engine) as session:
            client = session.get(Client, "portico-dev")
            assert client is not None and set(client.scope.split()) == ALL_SCOPES
    finally:
        engine.dispose()


def test_orders_service_client_is_seeded_and_kept(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = run(capsys, "init", "--seed-dev")
    path = workdir / "var/orders/client.json"
    assert first["orders_client_written"] is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    creds = json.loads(path.read_text())
    assert set(creds) == {"client_id", "client_secret"} and creds["client_id"] == "orders-service"
    assert granted(creds) == set(ORDERS_SCOPE.split())
    # More than it is allowed is never granted.
    assert granted(creds, "payments:write orders:write") == {"payments:write"}

    second = run(capsys, "init", "--seed-dev")
    assert second["orders_client_written"] is False
    assert json.loads(path.read_text()) == creds

    path.unlink()  # lost: a new secret is issued and written
    run(capsys, "init", "--seed-dev")
    renewed = json.loads(path.read_text())
    assert renewed["client_secret"] != creds["client_secret"]
    assert granted(renewed) == set(ORDERS_SCOPE.split())


def test_orders_client_file_option(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = run(capsys, "init", "--seed-dev", "--orders-client-file", "elsewhere/orders.json")
    assert out["orders_client_file"] == "elsewhere/orders.json"
    assert json.loads((workdir / "elsewhere/orders.json").read_text())["client_id"] == (
        "orders-service"
    )


def test_views_service_client_is_seeded_and_kept(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first = run(capsys, "init", "--seed-dev")
    path = workdir / "var/views/client.json"
    assert first["views_client_written"] is True
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    creds = json.loads(path.read_text())
    assert creds["client_id"] == "views-service"
    assert granted(creds) == {"orders:events"} == set(VIEWS_SCOPE.split())
    assert granted(creds, "orders:events orders:read:all") == {"orders:events"}
    assert run(capsys, "init", "--seed-dev")["views_client_written"] is False
    assert json.loads(path.read_text()) == creds
