"""API keys on the stack `make up` starts (ADR 0036): a key made with identity's command line
lists the catalog through the gateway (catalog verifies the token the gateway got for the key);
a scope the key lacks is 403, as for a token."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from typing import Any

import requests

from tests.support.waiting import wait_until
from tools.stack import Stack


def _identity(stack: Stack, *argv: str, stdin: str = "") -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "services.identity", *argv],
        cwd=stack.workdir, env=stack.env(), capture_output=True, text=True, timeout=60,
        check=False, input=stdin,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def test_a_key_from_the_command_line_reads_the_catalog(gateway: str, stack: Stack) -> None:
    # a user of its own: the key's rate-limit bucket is its owner's, and the session stack's
    # demo user has spent its quota on the other end-to-end tests by now
    owner = f"key-owner-{uuid.uuid4().hex[:8]}"
    _identity(stack, "users", "add", owner, stdin=f"{uuid.uuid4().hex}-Pw-1\n")
    made = _identity(
        stack, "api-keys", "create", "--owner", f"user:{owner}",
        "--scopes", "catalog:read", "--name", "e2e",
    )  # fmt: skip
    key = {"X-API-Key": made["api_key"]}

    def listed() -> requests.Response | None:
        resp = requests.get(f"{gateway}/api/v1/products", headers=key, timeout=10)
        return None if resp.status_code == 401 else resp

    # the gateway sees a new key at its next refresh of the feed (5 s + 2 s at most)
    resp = wait_until(listed, 30.0, "the gateway knows the new key")
    assert resp.status_code == 200, resp.text
    orders = requests.get(f"{gateway}/api/v1/orders", headers=key, timeout=10)
    assert orders.status_code == 403
    assert orders.headers["Content-Type"].startswith("application/problem+json")
