"""nginx in front of two gateway replicas, as `make up EDGE=nginx` runs it (a stack of its own,
with the edge's settings): TLS with the development CA, HTTP/2 offered, HSTS, the HTTP -> HTTPS
redirect, X-Request-ID generated or passed on, both replicas serving, identity's login throttle
keyed on the real client address, and the OAuth2 client_credentials + order tour through it.
Both rendered configs (local and compose) pass `nginx -t`.

nginx comes from the distribution (`apt-get install nginx`); with CI=true a missing nginx is
installed, and fails the run when it cannot be; locally the module skips.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import requests
from requests.adapters import HTTPAdapter

from tests.e2e.conftest import isolated_stack
from tests.support.waiting import wait_until
from tools import edge
from tools.stack import Stack, free_port

SCOPES = "catalog:read orders:read orders:write payments:read"


def _nginx() -> str:
    found = edge.nginx_binary()
    if found is None and os.environ.get("CI") == "true" and shutil.which("apt-get"):
        sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run([*sudo, "apt-get", "update", "-qq"], check=False, env=env, timeout=300)
        subprocess.run(
            [*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", "nginx"],
            check=False,
            env=env,
            timeout=300,
        )
        found = edge.nginx_binary()
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("nginx is required in CI and could not be installed")
        pytest.skip("nginx is not installed (apt-get install nginx)")
    return found


@dataclass
class Edge:
    base: str
    http_base: str
    ca: Path
    conf: Path
    access_log: Path
    gateway_logs: tuple[Path, Path]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The stack as `make up EDGE=nginx` configures it (not the session's plain one)."""
    _nginx()
    with isolated_stack(tmp_path_factory.mktemp("edge-stack"), edge.STACK_ENV) as started:
        yield started


@pytest.fixture(scope="module")
def nginx_edge(stack: Stack) -> Iterator[Edge]:
    https, http = free_port(), free_port()
    procs = edge.start_edge(
        stack, second_gateway_port=free_port(), https_port=https, http_port=http
    )
    try:
        edge_dir = stack.workdir / edge.EDGE_DIR
        second, _ = procs
        assert second.log_path is not None
        yield Edge(
            base=f"https://127.0.0.1:{https}",
            http_base=f"http://127.0.0.1:{http}",
            ca=edge_dir / "certs" / "ca.crt",
            conf=edge_dir / "nginx.conf",
            access_log=edge_dir / "run" / "log" / "access.log",
            gateway_logs=(stack.var / "log" / "gateway.log", second.log_path),
        )
    finally:
        stack.stop_processes(procs, timeout=10)


@pytest.fixture(scope="module")
def api(stack: Stack, nginx_edge: Edge) -> requests.Session:
    session = requests.Session()
    session.verify = str(nginx_edge.ca)
    session.trust_env = False  # else REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE beat session.verify
    creds = stack.credentials()
    resp = session.post(
        f"{nginx_edge.base}/oauth/token",
        data={"grant_type": "client_credentials", "scope": SCOPES},
        auth=(creds["client_id"], creds["client_secret"]),
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    session.headers["Authorization"] = f"Bearer {resp.json()['access_token']}"
    return session


def test_tls_offers_http2_with_the_dev_ca(nginx_edge: Edge) -> None:
    context = ssl.create_default_context(cafile=str(nginx_edge.ca))
    context.set_alpn_protocols(["h2", "http/1.1"])
    port = int(nginx_edge.base.rsplit(":", 1)[1])
    with (
        socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.selected_alpn_protocol() == "h2"
        assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_hsts_and_request_id_generated(nginx_edge: Edge) -> None:
    resp = requests.get(f"{nginx_edge.base}/healthz", verify=str(nginx_edge.ca), timeout=10)
    assert resp.status_code == 200
    assert resp.headers["Strict-Transport-Security"].startswith("max-age=31536000")
    assert re.fullmatch(r"[0-9a-f]{32}", resp.headers["X-Request-ID"])


def test_http_redirects_to_https(nginx_edge: Edge) -> None:
    resp = requests.get(
        f"{nginx_edge.http_base}/api/v1/products?limit=1", allow_redirects=False, timeout=10
    )
    assert resp.status_code == 308
    assert resp.headers["Location"] == f"{nginx_edge.base}/api/v1/products?limit=1"
    assert "Strict-Transport-Security" not in resp.headers  # only over TLS


def test_request_id_passed_on_and_logged_as_json(nginx_edge: Edge) -> None:
    rid = f"edge-{uuid.uuid4().hex}"
    resp = requests.get(
        f"{nginx_edge.base}/api/v1/products",
        headers={"X-Request-ID": rid, "Accept-Encoding": "gzip"},
        verify=str(nginx_edge.ca),
        timeout=10,
    )
    assert resp.status_code == 401
    assert resp.headers["Content-Type"].startswith("application/problem+json")
    assert resp.headers["X-Request-ID"] == rid
    assert resp.json()["correlation_id"] == rid  # the gateway saw nginx's header
    # nginx writes the access log line just after the response: poll for it
    wait_until(
        lambda: rid in nginx_edge.access_log.read_text(),
        10,
        "nginx logged the request",
        interval=0.05,
    )
    lines = nginx_edge.access_log.read_text().splitlines()
    entry = next(json.loads(line) for line in reversed(lines) if rid in line)
    assert entry["request_id"] == rid and entry["status"] == 401
    assert entry["upstream"].startswith("127.0.0.1:")


def test_both_gateways_serve(nginx_edge: Edge, api: requests.Session) -> None:
    marker = uuid.uuid4().hex
    for i in range(8):
        resp = api.get(
            f"{nginx_edge.base}/api/v1/products",
            params={"limit": 1},
            headers={"X-Request-ID": f"{marker}-{i}"},
            timeout=10,
        )
        assert resp.status_code == 200, resp.text

    def both_logged() -> bool:
        return all(marker in log.read_text(errors="replace") for log in nginx_edge.gateway_logs)

    wait_until(both_logged, 10, "both gateway replicas logged requests", interval=0.05)


def test_order_tour_through_the_edge(nginx_edge: Edge, api: requests.Session) -> None:
    products = api.get(f"{nginx_edge.base}/api/v1/products", params={"limit": 20}, timeout=10)
    assert products.status_code == 200, products.text
    assert len(products.content) > 1024  # above gzip_min_length
    assert products.headers["Content-Encoding"] == "gzip"  # requests sends Accept-Encoding
    resp = api.post(
        f"{nginx_edge.base}/api/v1/orders",
        json={"items": [{"sku": "BK-0001", "quantity": 1}], "payment_method": "pm_card_ok"},
        headers={"Idempotency-Key": uuid.uuid4().hex},
        timeout=10,
    )
    assert resp.status_code == 202, resp.text
    url = nginx_edge.base + resp.headers["Location"]
    final: dict[str, Any] = {}

    def settled() -> bool:
        got = api.get(url, timeout=10)
        assert got.status_code == 200, got.text
        final.update(got.json())
        return final["status"] in ("CONFIRMED", "REJECTED")

    wait_until(settled, 60, "the order settled", interval=0.05)
    assert final["status"] == "CONFIRMED", final


def test_compose_config_passes_nginx_t(tmp_path: Path, nginx_edge: Edge) -> None:
    """The compose render, with its service names and container paths swapped for ones that
    exist here (compose DNS names do not resolve outside compose); nothing else changes."""
    compose = edge.render(edge.compose_target())
    assert "server gateway-1:8080" in compose and "server gateway-2:8080" in compose
    local = (
        compose.replace("gateway-1:8080", "127.0.0.1:1")
        .replace("gateway-2:8080", "127.0.0.1:2")
        .replace(edge.COMPOSE_CERT_DIR, str(nginx_edge.ca.parent))
        .replace(edge.COMPOSE_WORK_DIR, str(tmp_path / "run"))
    )
    conf = tmp_path / "compose.conf"
    conf.write_text(local)
    edge.check_config(conf, tmp_path / "run")
    # and the local render in use passed too (start_edge runs `nginx -t` first)
    edge.check_config(nginx_edge.conf, nginx_edge.access_log.parent.parent)


# --- identity's login throttle behind two proxies ---


class _FromAddress(HTTPAdapter):
    """Connections from one loopback source address: every 127.0.0.0/8 address reaches
    nginx on 127.0.0.1, so each is a distinct client as nginx's $remote_addr sees it."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def _client_at(address: str, ca: Path) -> requests.Session:
    try:
        with socket.socket() as probe:
            probe.bind((address, 0))
    except OSError as exc:
        pytest.skip(f"cannot send from {address}: {exc}")
    session = requests.Session()
    session.verify = str(ca)
    session.trust_env = False
    session.mount("https://", _FromAddress(address))
    return session


def _sign_in(
    session: requests.Session, url: str, username: str, password: str, spoof: str | None = None
) -> requests.Response:
    """One attempt at the login form (a fresh page, so a fresh CSRF token)."""
    headers = {"X-Forwarded-For": spoof} if spoof else {}
    page = session.get(url, headers=headers, timeout=10)
    assert page.status_code == 200, page.text
    form = {
        "csrf_token": _csrf(page.text),
        "username": username,
        "password": password,
        "confirm": "yes",
    }
    return session.post(url, data=form, headers=headers, allow_redirects=False, timeout=10)


def _csrf(html: str) -> str:
    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html) or re.search(
        r'value="([^"]+)"[^>]*name="csrf_token"', html
    )
    assert match, "the login form carries a CSRF token"
    return match.group(1)


def _authorize_url(base: str, creds: dict[str, str]) -> str:
    verifier = secrets.token_urlsafe(48)
    challenge = (
        base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    )
    query = urlencode(
        {
            "response_type": "code",
            "client_id": creds["public_client_id"],
            "redirect_uri": creds["redirect_uri"],
            "scope": "catalog:read",
            "state": secrets.token_urlsafe(8),
            "code_challenge": challenge,
            "code_challenge_method": "S256",
        }
    )
    return f"{base}/oauth/authorize?{query}"


def test_wrong_passwords_from_one_address_do_not_lock_out_another(
    stack: Stack, nginx_edge: Edge
) -> None:
    """Five wrong passwords for a user from one client lock that client out - whatever
    X-Forwarded-For it claims, nginx replaces it - and never the user signing in from elsewhere.
    With identity counting one proxy (the old setting) it saw nginx's 127.0.0.1 for everyone."""
    creds = stack.credentials()
    attacker = _client_at("127.0.0.2", nginx_edge.ca)
    victim = _client_at("127.0.0.3", nginx_edge.ca)
    url = _authorize_url(nginx_edge.base, creds)
    username = creds["username"]
    for i in range(5):  # IDENTITY_LOGIN_MAX_FAILURES' default
        resp = _sign_in(attacker, url, username, f"wrong-{i}", spoof=f"198.51.100.{i + 1}")
        assert resp.status_code == 200 and "Invalid username or password" in resp.text
    for spoof in (None, "203.0.113.7", "127.0.0.3"):
        locked = _sign_in(attacker, url, username, creds["password"], spoof=spoof)
        assert locked.status_code == 429, (spoof, locked.text)
        assert int(locked.headers["Retry-After"]) > 0
    signed_in = _sign_in(victim, url, username, creds["password"])
    assert signed_in.status_code in (302, 303), signed_in.text
    assert signed_in.headers["Location"].startswith(creds["redirect_uri"])
