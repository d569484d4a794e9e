"""Container entry point for every Portico image (`Dockerfile`, build arg SERVICE).

    entry.py serve              # the default command of $PORTICO_SERVICE, on its usual port
    entry.py health [PATH]      # exit 0 when http://127.0.0.1:<port><PATH> answers 2xx
    entry.py CMD [ARGS...]      # any other command (compose passes the server command)

Before `serve` or a command, a service's container runs `python -m services.$PORTICO_SERVICE
migrate` (schema migrations, ADR 0019; PORTICO_MIGRATE=0 skips it, e.g. when a separate job
migrates), then `PORTICO_INIT` (e.g. "init --seed-demo") once: both are idempotent, so a
restarted container just re-checks its revision. Standard library only: it also runs the
HEALTHCHECK, where starting fast matters.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import urllib.request

# The ports `make up` uses; the same in containers, so docs and URLs carry over.
PORTS = {
    "gateway": 8080,
    "identity": 8101,
    "catalog": 8102,
    "inventory": 8103,
    "orders": 8104,
    "payments": 8105,
    "notifications": 8106,
    "views": 8107,
}
FLASK = frozenset({"identity", "catalog", "payments"})


def service() -> str:
    name = os.environ.get("PORTICO_SERVICE", "")
    if name not in PORTS:
        sys.exit(f"PORTICO_SERVICE must be one of {sorted(PORTS)}, not {name!r}")
    return name


def port(name: str) -> int:
    return int(os.environ.get("PORTICO_PORT") or PORTS[name])


def default_command(name: str) -> list[str]:
    """What tools/stack.py runs, listening on every interface of the container."""
    if name == "gateway":
        return ["python", "-m", "gateway", "serve"]
    if name in FLASK:
        return [
            "gunicorn", f"services.{name}.app:create_app()", "--bind", f"0.0.0.0:{port(name)}",
            "--workers", "2", "--worker-class", "gthread", "--threads", "4",
            "--graceful-timeout", "10", "--timeout", "30", "--error-logfile", "-",
            "--no-control-socket", "--limit-request-line", "8190",  # as tools/stack.py
            "--config", "python:chassis.gunicorn",
        ]  # fmt: skip
    return ["python", "-m", f"services.{name}", "serve"]


def health(name: str, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port(name)}{path}", timeout=3) as resp:
            return 0 if 200 <= resp.status < 300 else 1
    except OSError as exc:
        print(f"{name} {path}: {exc}", file=sys.stderr)
        return 1


def main(argv: list[str]) -> int:
    name = service()
    if argv[:1] == ["health"]:
        return health(name, argv[1] if len(argv) > 1 else "/health/live")
    command = default_command(name) if argv in ([], ["serve"]) else argv
    steps = []
    if name != "gateway" and os.environ.get("PORTICO_MIGRATE", "1") != "0":
        steps.append(["migrate"])  # ADR 0019: a failed revision stops the container here
    init = os.environ.get("PORTICO_INIT", "").strip()
    if init and name != "gateway":
        steps.append(shlex.split(init))
    for step in steps:
        done = subprocess.run([sys.executable, "-m", f"services.{name}", *step])
        if done.returncode:
            return done.returncode  # the command has said why on stderr
    os.execvp(command[0], command)
    return 127  # not reached: exec replaces this process


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
