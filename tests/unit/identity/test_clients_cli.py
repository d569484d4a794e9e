"""`python -m services.identity clients ...`, `users ...` and `init --clients-file` (issue 15,
items 4 and 5) against a throwaway SQLite database; each token is obtained from the real app.
"""

from __future__ import annotations

import io
import json
import os
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from services.identity.__main__ import main
from services.identity.app import create_app
from services.identity.entrypoints.deps import deps
from services.identity.settings import IdentitySettings

from .helpers import basic

ORDERS_SECRET = "orders-secret-" + "x" * 30


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith(("IDENTITY_", "PORTICO_")):
            monkeypatch.delenv(name)
    return tmp_path


class Cli:
    def __init__(self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch):
        self.capsys = capsys
        self.monkeypatch = monkeypatch

    def __call__(self, *argv: str, stdin: str = "") -> dict[str, Any]:
        code, out, err = self.status(*argv, stdin=stdin)
        assert code == 0, err
        return json.loads(out)  # type: ignore[no-any-return]

    def status(self, *argv: str, stdin: str = "") -> tuple[int, str, str]:
        self.monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = main(list(argv))
        out = self.capsys.readouterr()
        return code, out.out, out.err


@pytest.fixture
def cli(workdir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Cli:
    return Cli(capsys, monkeypatch)


@pytest.fixture
def web(workdir: Path) -> Iterator[FlaskClient]:
    """The app over the same database, made on first use (after `init`)."""
    made: list[Any] = []

    class Lazy:
        def __getattr__(self, name: str) -> Any:
            if not made:
                made.append(create_app(IdentitySettings.from_env()))
            return getattr(made[0].test_client(), name)

    yield Lazy()  # type: ignore[misc]
    for app in made:
        deps(app).engine.dispose()


def token_status(web: FlaskClient, client_id: str, secret: str, scope: str = "") -> int:
    form = {"grant_type": "client_credentials"}
    if scope:
        form["scope"] = scope
    return web.post("/oauth/token", data=form, headers=basic(client_id, secret)).status_code


def cc_scope(web: FlaskClient, client_id: str, secret: str) -> set[str]:
    resp = web.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, headers=basic(client_id, secret)
    )
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return set(resp.get_json()["scope"].split())


def write_secret(path: Path, value: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(value + "\n")
    return path


def clients_file(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


ORDERS_FILE = """\
clients:
  - client_id: orders-service
    name: Orders saga
    grant_types: [client_credentials]
    scope: "catalog:read inventory:write payments:write"
    token_endpoint_auth_method: client_secret_basic
    redirect_uris: []
    secret_file: secrets/orders_client_secret
  - client_id: shop-web
    name: Shop front
    grant_types: [authorization_code, refresh_token]
    scope: "catalog:read profile orders:read orders:write"
    token_endpoint_auth_method: none
    redirect_uris: ["https://shop.example/callback"]
"""


def test_init_applies_a_clients_file_and_orders_gets_a_token(
    cli: Cli, web: FlaskClient, workdir: Path
) -> None:
    write_secret(workdir / "conf/secrets/orders_client_secret", ORDERS_SECRET)
    path = clients_file(workdir / "conf/clients.yaml", ORDERS_FILE)
    out = cli("init", "--clients-file", str(path))
    assert out["clients_applied"] == ["orders-service", "shop-web"]
    assert cc_scope(web, "orders-service", ORDERS_SECRET) == {
        "catalog:read",
        "inventory:write",
        "payments:write",
    }
    listed = {c["client_id"]: c for c in cli("clients", "list")["clients"]}
    assert listed["shop-web"]["token_endpoint_auth_method"] == "none"
    assert listed["shop-web"]["redirect_uris"] == ["https://shop.example/callback"]
    assert ORDERS_SECRET not in json.dumps(listed) and "hash" not in json.dumps(listed)

    # Idempotent, and the file is the truth: a changed scope is applied on the next init.
    clients_file(path, ORDERS_FILE.replace("catalog:read inventory:write", "catalog:read"))
    assert cli("init", "--clients-file", str(path))["clients_applied"][0] == "orders-service"
    assert cc_scope(web, "orders-service", ORDERS_SECRET) == {"catalog:read", "payments:write"}


def test_the_clients_file_defaults_to_the_environment(
    cli: Cli, web: FlaskClient, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_secret(workdir / "conf/secrets/orders_client_secret", ORDERS_SECRET)
    path = clients_file(workdir / "conf/clients.yaml", ORDERS_FILE)
    monkeypatch.setenv("IDENTITY_CLIENTS_FILE", str(path))
    assert cli("init")["clients_applied"] == ["orders-service", "shop-web"]
    assert token_status(web, "orders-service", ORDERS_SECRET) == 200
    # --clients-file '' applies nothing even when the variable is set.
    assert cli("init", "--clients-file", "")["clients_applied"] == []


def test_seed_dev_and_a_clients_file_together(cli: Cli, web: FlaskClient, workdir: Path) -> None:
    """`make up` keeps working with --seed-dev; a file given too has the last word."""
    write_secret(workdir / "conf/secrets/orders_client_secret", ORDERS_SECRET)
    path = clients_file(workdir / "conf/clients.yaml", ORDERS_FILE)
    out = cli("init", "--seed-dev", "--clients-file", str(path))
    assert out["credentials_written"] is True
    dev = json.loads((workdir / "var/dev-credentials.json").read_text())
    assert token_status(web, dev["client_id"], dev["client_secret"]) == 200
    seeded = json.loads((workdir / "var/orders/client.json").read_text())
    assert token_status(web, "orders-service", ORDERS_SECRET) == 200
    assert token_status(web, "orders-service", seeded["client_secret"]) == 401


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("    redirect_uris: []\n", "    redirect_uris: []\n    colour: blue\n"),
         "clients[0].colour: Unknown field"),
        (("clients:\n", "extra: 1\nclients:\n"), "extra: Unknown field"),
        (('"catalog:read inventory:write', '"catalog:rule inventory:write'),
         "clients[0].scope: unknown scopes: catalog:rule"),
        (("secrets/orders_client_secret", "secrets/missing"),
         "clients[0].secret_file: cannot read"),
        (("grant_types: [client_credentials]", "grant_types: [password]"),
         "clients[0].grant_types[0]"),
        (("    secret_file: secrets/orders_client_secret\n", ""),
         "clients[0].secret_file: a confidential client needs its secret_file"),
        (("    redirect_uris: [\"https://shop.example/callback\"]\n", "    redirect_uris: []\n"),
         "clients[1].redirect_uris: authorization_code needs at least one URI"),
        (("client_id: shop-web", "client_id: orders-service"),
         "clients[1].client_id: orders-service appears twice"),
    ],
)  # fmt: skip
def test_a_bad_clients_file_is_refused_naming_the_key(
    cli: Cli, workdir: Path, change: tuple[str, str], message: str
) -> None:
    write_secret(workdir / "conf/secrets/orders_client_secret", ORDERS_SECRET)
    assert change[0] in ORDERS_FILE
    path = clients_file(workdir / "conf/clients.yaml", ORDERS_FILE.replace(*change))
    code, out, err = cli.status("init", "--clients-file", str(path))
    assert code == 2 and out == "", err
    assert message in err, err
    assert not (workdir / "var/identity/identity.db").exists()  # refused before anything


def test_a_short_secret_file_is_refused(cli: Cli, workdir: Path) -> None:
    write_secret(workdir / "conf/secrets/orders_client_secret", "change-me")
    path = clients_file(workdir / "conf/clients.yaml", ORDERS_FILE)
    code, _, err = cli.status("init", "--clients-file", str(path))
    assert code == 2 and "clients[0].secret_file" in err and "shorter than 32" in err


def test_clients_add_list_and_remove(cli: Cli, web: FlaskClient) -> None:
    cli("init")
    added = cli(
        "clients", "add", "reporting",
        "--name", "Reporting job",
        "--grant-types", "client_credentials",
        "--scope", "orders:read orders:read:all",
    )  # fmt: skip
    secret = added.pop("client_secret")
    assert len(secret) >= 32
    assert added == {
        "client_id": "reporting",
        "name": "Reporting job",
        "grant_types": ["client_credentials"],
        "scope": "orders:read orders:read:all",
        "token_endpoint_auth_method": "client_secret_basic",
        "redirect_uris": [],
        "previous_secret_valid": False,
    }
    assert cc_scope(web, "reporting", secret) == {"orders:read", "orders:read:all"}

    code, _, err = cli.status(
        "clients", "add", "reporting", "--grant-types", "client_credentials", "--scope", "profile"
    )
    assert code == 1 and "exists" in err
    code, _, err = cli.status(
        "clients", "add", "x", "--grant-types", "client_credentials", "--scope", "root"
    )
    assert code == 1 and "scope: unknown scopes: root" in err

    public = cli(
        "clients", "add", "mobile",
        "--grant-types", "authorization_code", "refresh_token",
        "--scope", "catalog:read profile",
        "--auth-method", "none",
        "--redirect-uri", "com.example.app:/oauth",
    )  # fmt: skip
    assert "client_secret" not in public and public["redirect_uris"] == ["com.example.app:/oauth"]
    assert [c["client_id"] for c in cli("clients", "list")["clients"]] == ["mobile", "reporting"]

    assert token_status(web, "reporting", secret) == 200
    removed = cli("clients", "remove", "reporting")
    assert removed == {"removed": "reporting", "tokens_removed": 2}  # the two tokens above
    assert token_status(web, "reporting", secret) == 401
    assert [c["client_id"] for c in cli("clients", "list")["clients"]] == ["mobile"]
    code, _, err = cli.status("clients", "remove", "reporting")
    assert code == 1 and "no client reporting" in err


def test_clients_add_with_a_secret_file(cli: Cli, web: FlaskClient, workdir: Path) -> None:
    cli("init")
    secret = write_secret(workdir / "s.txt", "k" * 40)
    added = cli(
        "clients", "add", "svc",
        "--grant-types", "client_credentials",
        "--scope", "catalog:read",
        "--secret-file", str(secret),
    )  # fmt: skip
    assert "client_secret" not in added  # it was given, not made: nothing to show
    assert token_status(web, "svc", "k" * 40) == 200


def test_rotation_keeps_the_old_secret_until_it_is_retired(cli: Cli, web: FlaskClient) -> None:
    """Item 5: old and new both work during the overlap; after retiring only the new one."""
    cli("init")
    old = cli(
        "clients", "add", "svc", "--grant-types", "client_credentials", "--scope", "catalog:read"
    )["client_secret"]
    rotated = cli("clients", "rotate-secret", "svc")
    new = rotated["client_secret"]
    assert new != old and rotated["previous_secret_valid"] is True
    assert token_status(web, "svc", old) == 200
    assert token_status(web, "svc", new) == 200
    assert cli("clients", "list")["clients"][0]["previous_secret_valid"] is True

    assert cli("clients", "rotate-secret", "svc", "--retire-previous") == {
        "client_id": "svc",
        "previous_retired": True,
    }
    assert token_status(web, "svc", old) == 401
    assert token_status(web, "svc", new) == 200
    assert cli("clients", "list")["clients"][0]["previous_secret_valid"] is False
    again = cli("clients", "rotate-secret", "svc", "--retire-previous")
    assert again["previous_retired"] is False

    # A second rotation before retiring: only the two newest secrets work.
    newer = cli("clients", "rotate-secret", "svc")["client_secret"]
    newest = cli("clients", "rotate-secret", "svc")["client_secret"]
    assert token_status(web, "svc", new) == 401
    assert token_status(web, "svc", newer) == 200 and token_status(web, "svc", newest) == 200


def test_rotation_from_a_secret_file_and_refusals(
    cli: Cli, web: FlaskClient, workdir: Path
) -> None:
    cli("init")
    old = cli(
        "clients", "add", "svc", "--grant-types", "client_credentials", "--scope", "catalog:read"
    )["client_secret"]
    path = write_secret(workdir / "new-secret", "n" * 40)
    out = cli("clients", "rotate-secret", "svc", "--secret-file", str(path))
    assert "client_secret" not in out
    assert token_status(web, "svc", old) == 200 and token_status(web, "svc", "n" * 40) == 200

    cli(
        "clients", "add", "spa",
        "--grant-types", "authorization_code",
        "--scope", "profile",
        "--auth-method", "none",
        "--redirect-uri", "https://spa.example/cb",
    )  # fmt: skip
    code, _, err = cli.status("clients", "rotate-secret", "spa")
    assert code == 1 and "public" in err
    code, _, err = cli.status("clients", "rotate-secret", "nobody")
    assert code == 1 and "no client nobody" in err


def test_rotation_through_the_clients_file(cli: Cli, web: FlaskClient, workdir: Path) -> None:
    """For clients the file owns: the new secret in secret_file, the old in
    previous_secret_file; dropping previous_secret_file retires it."""
    secrets_dir = workdir / "conf/secrets"
    write_secret(secrets_dir / "orders_client_secret", ORDERS_SECRET)
    path = clients_file(workdir / "conf/clients.yaml", ORDERS_FILE)
    cli("init", "--clients-file", str(path))
    new = "rotated-" + "y" * 40
    write_secret(secrets_dir / "orders_new", new)
    clients_file(
        path,
        ORDERS_FILE.replace(
            "    secret_file: secrets/orders_client_secret\n",
            "    secret_file: secrets/orders_new\n"
            "    previous_secret_file: secrets/orders_client_secret\n",
        ),
    )
    cli("init", "--clients-file", str(path))
    assert token_status(web, "orders-service", ORDERS_SECRET) == 200
    assert token_status(web, "orders-service", new) == 200
    clients_file(path, ORDERS_FILE.replace("secrets/orders_client_secret", "secrets/orders_new"))
    cli("init", "--clients-file", str(path))
    assert token_status(web, "orders-service", ORDERS_SECRET) == 401
    assert token_status(web, "orders-service", new) == 200


def test_users_add_with_roles(cli: Cli, workdir: Path) -> None:
    cli("init")
    staff = cli("users", "add", "Stella", "--role", "staff", "--email", "s@example.com",
                stdin="staff passphrase\n")  # fmt: skip
    assert staff["username"] == "stella" and staff["role"] == "staff"
    password = workdir / "pw"
    password.write_text("admin passphrase\n")
    password.chmod(0o600)
    assert stat.S_IMODE(password.stat().st_mode) == 0o600
    admin = cli("users", "add", "root", "--role", "admin", "--password-file", str(password))
    assert admin["role"] == "admin"
    assert cli("users", "add", "plain", stdin="customer passphrase\n")["role"] == "customer"

    code, _, err = cli.status("users", "add", "stella", "--role", "staff", stdin="another one\n")
    assert code == 1 and "taken" in err
    code, _, err = cli.status("users", "add", "shorty", "--role", "staff", stdin="short\n")
    assert code == 1 and "password" in err
    code, _, err = cli.status("users", "add", "bad name!", stdin="long enough pw\n")
    assert code == 1 and "username" in err
    code, _, err = cli.status("users", "add", "mail", "--email", "nope", stdin="long enough pw\n")
    assert code == 1 and "email" in err
    with pytest.raises(SystemExit):  # argparse refuses an unknown role
        main(["users", "add", "x", "--role", "superuser"])

    changed = cli("users", "set-role", "plain", "staff")
    assert (changed["role"], changed["was"]) == ("staff", "customer")
    code, _, err = cli.status("users", "set-role", "ghost", "staff")
    assert code == 1 and "no user ghost" in err
