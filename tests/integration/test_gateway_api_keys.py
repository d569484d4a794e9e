"""API keys end to end (issue 20 must 7, ADR 0036): a real identity (gunicorn, a throwaway
PostgreSQL database) and a real `python -m gateway`. A key made with identity's command line
reads the owner's own profile through the gateway (identity verifies the token the gateway got
for the key, as it does any token); after `api-keys revoke` the gateway answers 401 within the
documented bound (GATEWAY_API_KEYS_REFRESH + GATEWAY_API_KEYS_TIMEOUT)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.integration.test_gateway_failover import ROOT, Proc, running
from tests.support.waiting import wait_until
from tools.stack import free_port

pytestmark = pytest.mark.postgres

DEADLINE = 60.0  # for a process to start
ISSUER = "https://issuer.apikeys.test"
INTERNAL = "internal-" + "k" * 40
PASSWORD = "a sturdy passphrase 7391"
REFRESH, TIMEOUT = 2.0, 1.0
BOUND = REFRESH + TIMEOUT  # the documented bound for these settings


def _cli(env: dict[str, str], *argv: str, stdin: str = "") -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "services.identity", *argv],
        cwd=ROOT, env=env, input=stdin, capture_output=True, text=True, timeout=DEADLINE,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def _gateway_config(identity: str) -> dict[str, Any]:
    return {
        "server": {"host": "127.0.0.1", "port": 0},
        "auth": {
            "issuer": ISSUER,
            "audience": "portico-api",
            "jwks_url": f"{identity}/.well-known/jwks.json",
        },
        "upstreams": {"identity": {"instances": [identity], "timeout": 10}},
        "routes": [
            {
                "name": "users.me",
                "methods": ["GET"],
                "path": "/api/v1/users/me",
                "upstream": "identity",
                "auth": {"scopes": ["profile"]},
            }
        ],
    }


def test_a_key_works_through_the_gateway_until_it_is_revoked(
    postgres_url: str, tmp_path: Path
) -> None:
    id_port, gw_port = free_port(), free_port()
    identity_url = f"http://127.0.0.1:{id_port}"
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("IDENTITY_", "GATEWAY_"))},
        "PORTICO_ISSUER": ISSUER,
        "PORTICO_AUDIENCE": "portico-api",
        "PORTICO_JWKS_URL": f"{identity_url}/.well-known/jwks.json",
        "IDENTITY_DATABASE_URL": postgres_url,
        "IDENTITY_KEYS_FILE": str(tmp_path / "signing-keys.json"),
        "IDENTITY_SECRET_KEY_FILE": str(tmp_path / "secret-key"),
        "IDENTITY_INTERNAL_SECRET": INTERNAL,
        "PYTHONUNBUFFERED": "1",
    }
    _cli(env, "init")
    alice = _cli(env, "users", "add", "alice", stdin=PASSWORD + "\n")
    key = _cli(env, "api-keys", "create", "--owner", "user:alice", "--scopes", "profile")
    config = tmp_path / "gateway.yaml"
    config.write_text(yaml.safe_dump(_gateway_config(identity_url)))
    gw_env = {
        **env,
        "GATEWAY_CONFIG": str(config),
        "GATEWAY_PORT": str(gw_port),
        "GATEWAY_API_KEYS_URL": f"{identity_url}/internal/v1/api-keys",
        "GATEWAY_API_KEYS_SECRET": INTERNAL,
        "GATEWAY_API_KEYS_REFRESH": str(REFRESH),
        "GATEWAY_API_KEYS_TIMEOUT": str(TIMEOUT),
        "GATEWAY_API_KEYS_MAX_STALE": "10",
    }
    argv = [
        sys.executable, "-m", "gunicorn", "services.identity.app:create_app()",
        "--bind", f"127.0.0.1:{id_port}", "--workers", "1", "--worker-class", "gthread",
        "--threads", "4", "--error-logfile", "-", "--no-control-socket",
    ]  # fmt: skip
    identity = Proc("identity", argv, env, tmp_path / "identity.log")
    gateway = Proc("gateway", [sys.executable, "-m", "gateway"], gw_env, tmp_path / "gw.log")
    me = f"http://127.0.0.1:{gw_port}/api/v1/users/me"
    with_key = {"X-API-Key": key["api_key"]}
    seen: list[Any] = []

    def answered() -> requests.Response | None:
        assert identity.alive(), identity.tail()
        assert gateway.alive(), gateway.tail()
        try:
            resp = requests.get(me, headers=with_key, timeout=5)
        except requests.RequestException:
            return None
        seen[:] = [resp.status_code, resp.text]
        return resp if resp.status_code == 200 else None

    with running(gateway, identity):
        identity.start()
        wait_until(lambda: _up(f"{identity_url}/health/ready"), DEADLINE, "identity is ready")
        gateway.start()
        try:
            resp = wait_until(answered, DEADLINE, "the key reads alice's profile via the gateway")
        except Exception as exc:
            logs = f"{gateway.tail()}\n{identity.tail()}"
            raise AssertionError(f"last answer {seen}\n{logs}") from exc
        assert resp.json()["id"] == alice["id"] and resp.json()["username"] == "alice"

        wrong = {"X-API-Key": key["api_key"][:-4] + "AAAA"}
        refused = requests.get(me, headers=wrong, timeout=5)
        assert refused.status_code == 401
        assert refused.headers["Content-Type"].startswith("application/problem+json")
        both = requests.get(me, headers={**with_key, "Authorization": "Bearer x"}, timeout=5)
        assert both.status_code == 400

        _cli(env, "api-keys", "revoke", key["id"])
        deadline = time.monotonic() + BOUND
        status = 200
        while status == 200 and time.monotonic() < deadline:
            status = requests.get(me, headers=with_key, timeout=5).status_code
        assert status == 401, gateway.tail()


def _up(url: str) -> bool:
    try:
        return requests.get(url, timeout=5).status_code == 200
    except requests.RequestException:  # refused while it boots, or slow on a busy runner
        return False
