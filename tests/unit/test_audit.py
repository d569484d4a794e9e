"""`make audit`'s verdict (tools/audit.py): an audit that could not reach the advisory service,
or whose service knew none of the pins, says so and passes only outside CI; findings always
fail. pip-audit itself is replaced by recorded answers: no network here."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tools import audit

CONNECTION_TRACEBACK = """Traceback (most recent call last):
  ...
requests.exceptions.ConnectionError: HTTPSConnectionPool(host='advisories.invalid', port=443):
Max retries exceeded with url: /pypi/aiohttp/3.14.5/json (Caused by NewConnectionError(...))
"""


def _report(*deps: dict[str, object]) -> str:
    return json.dumps({"dependencies": list(deps), "fixes": []})


CLEAN = _report(
    {"name": "aiohttp", "version": "3.14.5", "vulns": []},
    {"name": "flask", "version": "3.1.2", "vulns": []},
)
VULNERABLE = _report(
    {"name": "aiohttp", "version": "3.14.5", "vulns": []},
    {
        "name": "flask",
        "version": "3.1.2",
        "vulns": [{"id": "PYSEC-0000-1", "fix_versions": ["3.1.3"], "aliases": []}],
    },
)
ALL_SKIPPED = _report(
    {"name": "aiohttp", "skip_reason": "Dependency not found on PyPI and could not be audited"},
    {"name": "flask", "skip_reason": "Dependency not found on PyPI and could not be audited"},
)
SOME_SKIPPED = _report(
    {"name": "aiohttp", "version": "3.14.5", "vulns": []},
    {"name": "flask", "skip_reason": "Dependency not found on PyPI and could not be audited"},
)


@pytest.mark.parametrize(
    ("returncode", "stdout", "stderr", "kind"),
    [
        (0, CLEAN, "", "clean"),
        (1, VULNERABLE, "", "vulnerable"),
        (0, ALL_SKIPPED, "", "unreachable"),  # pip-audit says "no known vulnerabilities"
        (0, SOME_SKIPPED, "", "unreachable"),
        (1, "", CONNECTION_TRACEBACK, "unreachable"),
        (1, "", "requests.exceptions.ReadTimeout: ... Read timed out.", "unreachable"),
        (2, "", "pip-audit: error: unrecognized arguments: --bogus", "failed"),
        (1, "not json", "ValueError: something else", "failed"),
    ],
)
def test_classify(returncode: int, stdout: str, stderr: str, kind: str) -> None:
    assert audit.classify(returncode, stdout, stderr).kind == kind


@pytest.mark.parametrize(
    ("kind", "local", "ci"),
    [("clean", 0, 0), ("vulnerable", 1, 1), ("unreachable", 0, 3), ("failed", 2, 2)],
)
def test_exit_codes_locally_and_in_ci(kind: str, local: int, ci: int) -> None:
    outcome = audit.Outcome(kind, "x")
    assert audit.exit_code(outcome, ci=False) == local
    assert audit.exit_code(outcome, ci=True) == ci


def test_ci_is_read_from_the_environment() -> None:
    assert audit.in_ci({"CI": "true"}) and audit.in_ci({"CI": "1"})
    assert not audit.in_ci({}) and not audit.in_ci({"CI": "false"})


def _fake(returncode: int, stdout: str, stderr: str = "") -> audit.Runner:
    def run(argv: list[str]) -> subprocess.CompletedProcess[str]:
        assert argv[:3] == [sys.executable, "-m", "pip_audit"]
        assert argv[argv.index("--requirement") + 1] == "requirements.lock"
        assert {"--no-deps", "--disable-pip"} <= set(argv)
        assert argv[argv.index("--format") + 1] == "json"
        return subprocess.CompletedProcess(argv, returncode, stdout, stderr)

    return run


def test_unreachable_says_so_and_passes_locally(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CI", raising=False)
    assert audit.main(["requirements.lock"], run=_fake(1, "", CONNECTION_TRACEBACK)) == 0
    err = capsys.readouterr().err
    assert "could not be reached" in err and "set CI=true to fail" in err


def test_unreachable_fails_with_ci_true(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CI", "true")
    assert audit.main([], run=_fake(1, "", CONNECTION_TRACEBACK)) == audit.EXIT_UNAUDITED
    assert "CI=true: failing" in capsys.readouterr().err


def test_a_service_that_knows_no_pin_is_no_audit(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("CI", "true")
    assert audit.main([], run=_fake(0, ALL_SKIPPED)) == audit.EXIT_UNAUDITED
    err = capsys.readouterr().err
    assert "none of the 2 pinned dependencies" in err and "not audited: flask" in err


def test_findings_fail_everywhere_and_are_listed(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("CI", raising=False)
    assert audit.main([], run=_fake(1, VULNERABLE)) == 1
    assert "flask 3.1.2: PYSEC-0000-1 (3.1.3)" in capsys.readouterr().err


def test_clean(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CI", "true")
    assert audit.main([], run=_fake(0, CLEAN)) == 0
    assert "2 dependencies audited, no known vulnerabilities" in capsys.readouterr().out


def test_pip_audit_is_pinned_in_its_own_lock_not_the_runtime_one() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    pins = (root / "requirements-audit.lock").read_text()
    assert any(line.startswith("pip_audit==") for line in pins.splitlines())
    assert "pip_audit" not in (root / "requirements.lock").read_text().replace("-", "_")
    makefile = (root / "Makefile").read_text()
    assert "-m tools.audit requirements.lock" in makefile
