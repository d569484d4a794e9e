"""The dev overlay's identity, run for real: what `kubectl apply -k deploy/k8s/overlays/dev`
would run, outside a cluster.

The overlay is rendered (the committed `*.example` files stand in for the never-committed
secrets), identity's init container's command - `python -m services.identity init
--clients-file ...` - runs with the clients file and the secret files the pod would mount and
the environment the pod would have, against a throwaway PostgreSQL database (the only change:
the database URL's host, `postgres` in the cluster, is this machine's test server, and the
signing keys are created by init instead of copied from their Secret). Then identity's main
container command runs on a free port and orders' client, as orders is configured
(ORDERS_CLIENT_ID, ORDERS_CLIENT_SECRET_FILE), gets a client_credentials token with exactly the
scopes the saga needs: the client exists without `--seed-dev`, so a saga in a cluster can start.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.unit.test_k8s_manifests import container_environment, render
from tools.stack import DEFAULT_PORTS, Process, Stack, _gunicorn, free_port

pytestmark = pytest.mark.postgres

ORDERS_SCOPES = {"catalog:read", "inventory:write", "payments:write"}


def _adjusted(environ: dict[str, str], database_url: str, tmp_path: Path) -> dict[str, str]:
    """The pod's environment for this machine: the database file points at the throwaway
    database, the signing keys live in the test's directory."""
    Path(environ["IDENTITY_DATABASE_URL_FILE"]).write_text(database_url + "\n")
    return {**environ, "IDENTITY_KEYS_FILE": str(tmp_path / "signing-keys.json")}


@pytest.fixture
def identity(postgres_url: str, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    rendered = render("dev")
    root = tmp_path / "pod"
    init, init_env = container_environment(rendered, "identity", root, init=True)
    _main, main_env = container_environment(rendered, "identity", root)
    _orders, orders_env = container_environment(rendered, "orders", tmp_path / "orders-pod")
    command = " ".join(init["command"])
    found = re.search(r"exec python -m services\.identity (init .*--clients-file \S+.*)$", command)
    assert found, command
    args = [a.replace("/etc/", f"{root}/etc/", 1) for a in found.group(1).split()]
    init_env = _adjusted(init_env, postgres_url, tmp_path)
    env = {**os.environ, **init_env}
    done = subprocess.run(
        [sys.executable, "-m", "services.identity", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    port = free_port()
    ports = {**DEFAULT_PORTS, "identity": port}  # only identity is started
    stack = Stack(tmp_path, ports=ports, extra_env=_adjusted(main_env, postgres_url, tmp_path))
    proc = Process("identity", _gunicorn("identity", port), port)
    try:
        stack._spawn(proc)
        stack._wait_ready(proc)
        yield f"http://127.0.0.1:{port}", orders_env
    finally:
        stack.stop()


def _claims(token: str) -> dict[str, object]:
    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))


def test_orders_client_from_the_dev_overlay_gets_a_token(
    identity: tuple[str, dict[str, str]],
) -> None:
    url, orders_env = identity
    client_id = orders_env["ORDERS_CLIENT_ID"]
    secret = Path(orders_env["ORDERS_CLIENT_SECRET_FILE"]).read_text().strip()
    resp = requests.post(
        f"{url}/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(client_id, secret),
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body["scope"].split()) == ORDERS_SCOPES
    claims = _claims(body["access_token"])
    assert claims["client_id"] == client_id == "orders-service"
    assert set(str(claims["scope"]).split()) == ORDERS_SCOPES
    wrong = requests.post(
        f"{url}/oauth/token",
        data={"grant_type": "client_credentials"},
        auth=(client_id, secret + "x"),
        timeout=10,
    )
    assert wrong.status_code == 401
