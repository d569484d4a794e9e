"""The admin view on a real `python -m gateway` process (issue 20 must 8): its own listener
on 127.0.0.1, off the public port, and `python -m gateway status` printing it from the same
GATEWAY_ADMIN_* variables (the token read from a file, as deployments mount it)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import requests
import yaml

from tests.integration.test_gateway_failover import (
    ISSUER,
    ROOT,
    Proc,
    _gateway_config,
    jwks,  # noqa: F401  (the fixture)
    running,
)
from tests.support.tokens import TestIssuer
from tests.support.waiting import wait_until
from tools.stack import free_port

DEADLINE = 30.0


def test_the_admin_listener_and_the_status_command(
    jwks: tuple[TestIssuer, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    _issuer, jwks_url = jwks
    upstream = f"http://127.0.0.1:{free_port()}"  # nobody listens: its probe fails
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(_gateway_config([upstream], jwks_url)))
    token_file = tmp_path / "admin-token"
    token_file.write_text("s3cret-admin-token\n")
    port, admin_port = free_port(), free_port()
    env = {
        **os.environ,
        "PORTICO_ISSUER": ISSUER,
        "GATEWAY_CONFIG": str(config),
        "GATEWAY_PORT": str(port),
        "GATEWAY_ADMIN_PORT": str(admin_port),
        "GATEWAY_ADMIN_TOKEN_FILE": str(token_file),
        "PYTHONUNBUFFERED": "1",
    }
    gateway = Proc("gateway", [sys.executable, "-m", "gateway"], env, tmp_path / "gateway.log")
    admin = f"http://127.0.0.1:{admin_port}/admin/status"
    bearer = {"Authorization": "Bearer s3cret-admin-token"}

    def out_of_rotation() -> dict[str, object] | None:
        assert gateway.alive(), gateway.tail()
        try:
            doc = requests.get(admin, headers=bearer, timeout=2).json()
        except requests.ConnectionError:
            return None
        instance = doc["upstreams"]["catalog"]["instances"][0]
        return doc if instance["healthy"] is False else None

    with running(gateway):
        gateway.start()
        doc = wait_until(out_of_rotation, DEADLINE, "the admin view shows the failed probe")
        assert doc["routes"][0]["name"] == "products.list"
        assert requests.get(admin, timeout=2).status_code == 401
        public = requests.get(f"http://127.0.0.1:{port}/admin/status", headers=bearer, timeout=2)
        assert public.status_code == 404  # not on the public listener

        status_env = {k: v for k, v in env.items() if k != "GATEWAY_CONFIG"}
        shown = subprocess.run(
            [sys.executable, "-m", "gateway", "status"],
            cwd=ROOT, env=status_env, capture_output=True, text=True, timeout=DEADLINE,
        )  # fmt: skip
        assert shown.returncode == 0, shown.stderr
        assert "products.list" in shown.stdout and upstream in shown.stdout
        assert "OUT" in shown.stdout
        as_json = subprocess.run(
            [sys.executable, "-m", "gateway", "status", "--json"],
            cwd=ROOT, env=status_env, capture_output=True, text=True, timeout=DEADLINE,
        )  # fmt: skip
        assert json.loads(as_json.stdout)["config"]["version"] == doc["config"]["version"]

        wrong = {k: v for k, v in status_env.items() if k != "GATEWAY_ADMIN_TOKEN_FILE"}
        wrong["GATEWAY_ADMIN_TOKEN"] = "nope"
        refused = subprocess.run(
            [sys.executable, "-m", "gateway", "status"],
            cwd=ROOT, env=wrong, capture_output=True, text=True, timeout=DEADLINE,
        )  # fmt: skip
        assert refused.returncode == 1 and "HTTP 401" in refused.stderr
