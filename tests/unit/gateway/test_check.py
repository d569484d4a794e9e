"""`python -m gateway check [FILE]`: a config is validated and every error named by key path."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gateway.__main__ import main
from gateway.config import DEFAULT_CONFIG_PATH

from .conftest import BASE


def _write(tmp_path: Path, raw: object) -> Path:
    path = tmp_path / "gateway.yaml"
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")
    return path


def _check(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(["check", str(path)])
    out, err = capsys.readouterr()
    return int(exited.value.code or 0), out, err


def test_a_valid_file_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _check(_write(tmp_path, BASE), capsys)
    assert code == 0
    assert "OK" in out


def test_every_error_is_listed_by_key_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("NO_SUCH_GATEWAY_VAR", raising=False)
    raw = copy.deepcopy(BASE)
    raw["routes"][0]["upstream"] = "nowhere"
    raw["routes"][2]["timeout"] = 0
    raw["upstreams"]["svc"]["pool_size"] = -1
    raw["server"]["port"] = 70000
    raw["server"]["host"] = "${NO_SUCH_GATEWAY_VAR}"
    raw["surprise"] = True
    code, _, err = _check(_write(tmp_path, raw), capsys)
    assert code == 1
    for expected in (
        "routes[2].timeout: must be > 0",
        "upstreams.svc.pool_size: must be > 0",
        "server.port: must be 0..65535",
        "server.host: environment variable NO_SUCH_GATEWAY_VAR is not set",
        "surprise: Unknown field",
    ):
        assert expected in err, err
    assert err.count("\n  ") >= 5  # one indented line per error


def test_cross_references_are_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = copy.deepcopy(BASE)
    raw["routes"][0]["upstream"] = "nowhere"
    code, _, err = _check(_write(tmp_path, raw), capsys)
    assert code == 1
    assert "routes[0].upstream: unknown upstream 'nowhere'" in err


def test_unreadable_and_non_yaml_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _check(tmp_path / "missing.yaml", capsys)
    assert code == 1
    assert "cannot read" in err
    bad = tmp_path / "bad.yaml"
    bad.write_text("routes: [\n", encoding="utf-8")
    code, _, err = _check(bad, capsys)
    assert code == 1
    assert "not valid YAML" in err


def test_the_shipped_config_passes_from_the_command_line() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "gateway", "check", str(DEFAULT_CONFIG_PATH)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "OK" in done.stdout
