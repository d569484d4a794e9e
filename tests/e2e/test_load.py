"""`make load`, short, inside `make test` (ADR 0022): the Locust journey through a whole stack
on free ports, then the saga invariants. Fails on any failed request or broken invariant, never
on a timing; prints the journey's requests per second and p99 either way.

LOAD_RUN_TIME (seconds, default 20) and LOAD_USERS (default 10) size it.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.external import redis_up, unavailable

ROOT = Path(__file__).resolve().parents[2]
RUN_TIME = int(os.environ.get("LOAD_RUN_TIME", "20"))
USERS = int(os.environ.get("LOAD_USERS", "10"))


def test_the_journey_under_load_fails_no_request_and_keeps_the_saga_invariants(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    redis_up()  # the stack's broker: skip locally without it, fail with CI=true
    if importlib.util.find_spec("locust") is None:  # never imported here: it monkey-patches
        unavailable("locust", ImportError("make test installs it from requirements-bench.lock"))
    argv = [sys.executable, "-m", "tests.load", "--run-time", str(RUN_TIME), "--users", str(USERS)]
    done = subprocess.run(
        [*argv, "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=RUN_TIME + 420,  # the stack's start, Locust's stop, the orders' settling
        check=False,
    )
    output = done.stdout + done.stderr
    summary = [line for line in output.splitlines() if line.startswith(("journey:", "load:"))]
    with capsys.disabled():
        print(f"\nload ({USERS} users, {RUN_TIME}s): " + " | ".join(summary), flush=True)
    assert done.returncode == 0, output
