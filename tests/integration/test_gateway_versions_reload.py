"""A real `python -m gateway` process with a deprecated route and a flag-gated one: a reload
naming a past sunset is refused and the old Sunset stays, a flags file edit is seen without a
restart and a flags file that does not parse keeps the last good flags; `python -m gateway
check` names both problems by key path."""

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
from typing import Any

import pytest
import yaml

from tests.support.waiting import wait_until
from tools.stack import free_port

SUNSET = "2099-06-30"
FLAG = "demo.new_thing"


def _config(port: int, sunset: str = SUNSET, since: str = "2026-12-01") -> dict[str, Any]:
    route = {"methods": ["GET"], "upstream": "svc", "auth": {"required": False}}
    return {
        "server": {"host": "127.0.0.1", "port": port},
        "upstreams": {"svc": {"instances": ["http://127.0.0.1:9"], "health": {"interval": 60}}},
        "routes": [
            {**route, "name": "old", "path": "/old/{id}",
             "deprecation": {"deprecated_at": since, "sunset": sunset,
                             "successor": "/new/{id}"}},
            {**route, "name": "gated", "path": "/gated",
             "policies": [{"use": "flag", "settings": {"name": FLAG}}]},
        ],
    }  # fmt: skip


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text + f"\n# {time.monotonic_ns()}\n", encoding="utf-8")
    os.replace(tmp, path)


def _get(url: str) -> tuple[int, dict[str, str]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return int(resp.status), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers)


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[tuple[str, Path, Path, subprocess.Popen[bytes]]]:
    port = free_port()
    config, flags = tmp_path / "gateway.yaml", tmp_path / "flags.yaml"
    _write(config, yaml.safe_dump(_config(port)))
    _write(flags, f"flags: {{{FLAG}: false}}")
    log = (tmp_path / "gateway.log").open("wb")
    env = {
        **os.environ,
        "GATEWAY_CONFIG": str(config),
        "GATEWAY_PORT": str(port),
        "PORTICO_FLAGS_FILE": str(flags),
        "PORTICO_FLAGS_RELOAD_INTERVAL": "0.05",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway"], env=env, stdout=log, stderr=subprocess.STDOUT
    )
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return _get(base + "/healthz")[0] == 200
        except OSError:
            return False

    try:
        wait_until(up, 20, "the gateway to start", interval=0.05)
        yield base, config, flags, proc
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def test_a_past_sunset_is_refused_and_a_bad_flags_file_keeps_the_flags(
    gateway: tuple[str, Path, Path, subprocess.Popen[bytes]],
) -> None:
    base, config, flags, proc = gateway
    port = int(base.rsplit(":", 1)[1])
    status, headers = _get(base + "/old/7")  # the upstream is down: a 5xx, still deprecated
    assert status >= 500
    assert headers["Deprecation"] == "@1796083200"
    assert headers["Sunset"] == "Tue, 30 Jun 2099 00:00:00 GMT"
    assert headers["Link"] == '</new/7>; rel="successor-version"'

    _write(config, yaml.safe_dump(_config(port, sunset="2001-01-01", since="2000-01-01")))
    proc.send_signal(signal.SIGHUP)
    log = config.with_name("gateway.log")
    wait_until(
        lambda: "routes[0].deprecation.sunset" in log.read_text(errors="replace"),
        10,
        "the refused reload's log line",
        interval=0.05,
    )
    assert _get(base + "/old/7")[1]["Sunset"] == "Tue, 30 Jun 2099 00:00:00 GMT"

    checked = subprocess.run(
        [sys.executable, "-m", "gateway", "check", str(config)],
        env={**os.environ, "PORTICO_FLAGS_FILE": str(flags)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 1
    assert "routes[0].deprecation.sunset: 2001-01-01T00:00:00+00:00 is in the past" in (
        checked.stderr
    )

    assert _get(base + "/gated")[0] == 404  # off
    _write(flags, f"flags: {{{FLAG}: true}}")
    wait_until(lambda: _get(base + "/gated")[0] != 404, 10, "the flag on", interval=0.05)
    _write(flags, "flags: {" + FLAG + ": {enabled: tru")  # does not parse
    wait_until(
        lambda: (
            _get(base + "/gated")[0] != 404  # an evaluation looks at the file
            and "flags file" in log.read_text(errors="replace")
        ),
        10,
        "the bad flags file logged",
        interval=0.05,
    )
    metrics = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
    assert "portico_flags_reload_errors_total 1.0" in metrics
    assert _get(base + "/gated")[0] != 404  # the last good flags stay

    checked = subprocess.run(
        [sys.executable, "-m", "gateway", "check", str(config)],
        env={**os.environ, "PORTICO_FLAGS_FILE": str(flags)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert f"PORTICO_FLAGS_FILE={flags}: <file>: {flags} is not valid YAML" in checked.stderr
    assert "routes[0].deprecation.sunset" in checked.stderr  # each problem, in one run
    assert proc.poll() is None
