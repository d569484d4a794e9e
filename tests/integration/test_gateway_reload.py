"""A real `python -m gateway` process reloads its config: on SIGHUP and when the file changes,
and refuses an invalid file while the old routes keep working."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.support.waiting import wait_until
from tools.stack import free_port


def _config(routes: list[str], port: int) -> dict[str, object]:
    return {
        "server": {"host": "127.0.0.1", "port": port},
        "upstreams": {"svc": {"instances": ["http://127.0.0.1:9"], "health": {"interval": 60}}},
        "routes": [
            {"name": p.strip("/"), "methods": ["GET"], "path": p, "upstream": "svc",
             "auth": {"required": False}}
            for p in routes
        ],
    }  # fmt: skip


def _write(path: Path, raw: object) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(raw) + f"# {time.monotonic_ns()}\n", encoding="utf-8")
    os.replace(tmp, path)


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[str, Path, subprocess.Popen[bytes]]]:
    port = free_port()
    path = tmp_path / "gateway.yaml"
    _write(path, _config(["/a"], port))
    log = (tmp_path / "gateway.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway"],
        env={**os.environ, "GATEWAY_CONFIG": str(path), "GATEWAY_PORT": str(port)},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return _status(base + "/healthz") == 200
        except OSError:
            return False

    try:
        wait_until(up, 20, "the gateway to start", interval=0.05)
        yield base, path, proc
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def test_file_change_sighup_and_an_invalid_file(
    gateway: tuple[str, Path, subprocess.Popen[bytes]],
) -> None:
    base, path, proc = gateway
    port = int(base.rsplit(":", 1)[1])
    assert _status(base + "/b") == 404
    assert _status(base + "/a") != 404  # routed (the upstream itself is unreachable)

    _write(path, _config(["/a", "/b"], port))  # noticed by the poller
    wait_until(lambda: _status(base + "/b") != 404, 10, "route /b after the reload", interval=0.05)

    bad = _config(["/a"], port)
    bad["routes"][0]["upstream"] = "nowhere"  # type: ignore[index]
    _write(path, bad)
    log = path.with_name("gateway.log")
    wait_until(
        lambda: "routes[0].upstream" in log.read_text(errors="replace"),
        10,
        "the refused reload's log line",
        interval=0.05,
    )
    assert _status(base + "/b") != 404  # the old config stays in force

    # SIGHUP: the file is read again at once, whatever its modification time says
    raw = _config(["/a", "/c"], port)
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    proc.send_signal(signal.SIGHUP)
    wait_until(lambda: _status(base + "/c") != 404, 10, "route /c after the reload", interval=0.05)
    assert _status(base + "/b") == 404
    assert proc.poll() is None
