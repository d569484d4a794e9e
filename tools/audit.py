"""`make audit`: pip-audit over requirements.lock, with an honest verdict.

    python -m tools.audit [LOCK] [pip-audit options...]     # run from the audit venv

pip-audit looks every pin up in an advisory service. When that service cannot be reached the
lookups fail; when it answers without knowing the packages (a mirror, a proxy) every pin is
"skipped" and pip-audit still says "No known vulnerabilities found" and exits 0 - an audit of
nothing. This wrapper tells the outcomes apart:

- every pin looked up, no advisory: exit 0;
- advisories found: they are printed, exit 1 (locally and in CI);
- the service could not be reached, or some pins could not be looked up: said so, naming
  them; exit 0 locally (an offline laptop is no reason to stop work) and 3 with CI=true (CI
  must not pass without an audit);
- pip-audit itself failed another way: its message, exit 2.

Standard library only: it runs in the small audit venv (`requirements-audit.lock`), apart
from the project's.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

DEFAULT_LOCK = "requirements.lock"
# requests/urllib3 errors and resolver messages pip-audit lets through when it cannot connect
_NETWORK = re.compile(
    r"ConnectionError|ConnectTimeout|ReadTimeout|ProxyError|SSLError|MaxRetryError|"
    r"NewConnectionError|Max retries exceeded|Name or service not known|"
    r"Temporary failure in name resolution|Network is unreachable|ServiceError|timed out"
)
EXIT_CLEAN, EXIT_VULNERABLE, EXIT_FAILED, EXIT_UNAUDITED = 0, 1, 2, 3

Runner = Callable[[list[str]], subprocess.CompletedProcess[str]]


@dataclass(frozen=True)
class Outcome:
    """What one pip-audit run established."""

    kind: str  # "clean" | "vulnerable" | "unreachable" | "failed"
    message: str
    audited: int = 0
    skipped: tuple[str, ...] = ()
    findings: tuple[str, ...] = field(default=())


def in_ci(environ: Mapping[str, str] | None = None) -> bool:
    env = os.environ if environ is None else environ
    return env.get("CI", "").strip().lower() in {"1", "true", "yes"}


def classify(returncode: int, stdout: str, stderr: str) -> Outcome:
    """Read a `pip-audit --format json` run: its exit code, its JSON and its stderr."""
    try:
        report: Any = json.loads(stdout) if stdout.strip() else None
    except ValueError:
        report = None
    if not isinstance(report, dict) or "dependencies" not in report:
        last = next((ln for ln in reversed(stderr.strip().splitlines()) if ln.strip()), "")
        if _NETWORK.search(stderr):
            return Outcome("unreachable", f"the advisory service could not be reached: {last}")
        return Outcome("failed", f"pip-audit failed (exit {returncode}): {last or 'no output'}")
    findings: list[str] = []
    skipped: list[str] = []
    audited = 0
    for dep in report["dependencies"]:
        if "skip_reason" in dep:
            skipped.append(f"{dep.get('name')}: {dep['skip_reason']}")
            continue
        audited += 1
        for vuln in dep.get("vulns") or []:
            fixes = ", ".join(vuln.get("fix_versions") or []) or "no fix yet"
            findings.append(f"{dep['name']} {dep.get('version', '?')}: {vuln.get('id')} ({fixes})")
    if findings:
        return Outcome(
            "vulnerable",
            f"{len(findings)} known vulnerabilities in {audited} audited dependencies",
            audited,
            tuple(skipped),
            tuple(findings),
        )
    if skipped:
        total = audited + len(skipped)
        message = (
            f"the advisory service answered for none of the {total} pinned dependencies "
            "(unreachable, or it does not know them): NOT audited"
            if not audited
            else f"the advisory service could not look up {len(skipped)} of the {total} pinned "
            "dependencies: those are NOT audited"
        )
        return Outcome("unreachable", message, audited, tuple(skipped))
    return Outcome("clean", f"{audited} dependencies audited, no known vulnerabilities", audited)


def exit_code(outcome: Outcome, ci: bool) -> int:
    if outcome.kind == "clean":
        return EXIT_CLEAN
    if outcome.kind == "vulnerable":
        return EXIT_VULNERABLE
    if outcome.kind == "unreachable":
        return EXIT_UNAUDITED if ci else EXIT_CLEAN
    return EXIT_FAILED


def report(outcome: Outcome, ci: bool) -> str:
    lines = [f"make audit: {outcome.message}"]
    lines += [f"  {f}" for f in outcome.findings]
    shown = outcome.skipped[:10]
    lines += [f"  not audited: {s}" for s in shown]
    if len(outcome.skipped) > len(shown):
        lines.append(f"  ... and {len(outcome.skipped) - len(shown)} more")
    if outcome.kind == "unreachable":
        lines.append(
            "  CI=true: failing, an unaudited build must not pass"
            if ci
            else "  exiting 0 (set CI=true to fail instead); run `make audit` again when online"
        )
    return "\n".join(lines)


def _run(argv: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def main(argv: Sequence[str] | None = None, run: Runner = _run) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    lock = args.pop(0) if args and not args[0].startswith("-") else DEFAULT_LOCK
    command = [
        sys.executable, "-m", "pip_audit", "--requirement", lock,
        # the lock pins every package: look each pin up as it is, no resolver, no pip
        "--no-deps", "--disable-pip", "--progress-spinner", "off", "--format", "json",
        *args,
    ]  # fmt: skip
    try:
        done = run(command)
    except OSError as exc:
        print(f"make audit: cannot run pip-audit: {exc}", file=sys.stderr)
        return EXIT_FAILED
    ci = in_ci()
    outcome = classify(done.returncode, done.stdout, done.stderr)
    stream = sys.stdout if outcome.kind == "clean" else sys.stderr
    print(report(outcome, ci), file=stream)
    return exit_code(outcome, ci)


if __name__ == "__main__":
    sys.exit(main())
