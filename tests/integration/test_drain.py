"""Graceful drain of an aiohttp process (`chassis.drain`, ADR 0033), on a real process.

SIGTERM: readiness answers 503 `draining` at once while the listener stays open for the drain
delay; a second signal ends the delay; the listener closes; the request in flight still gets
its answer; the process exits 0. Nothing here measures time: the slow request is held until
the test sends SIGUSR1, and every wait is a condition with a deadline.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.waiting import wait_until
from tools.stack import free_port

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 30.0


@pytest.fixture
def service(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    port = free_port()
    env = {
        **os.environ,
        "PORTICO_DRAIN_DELAY": "120",  # ended by the second signal, never waited out
        "PORTICO_SHUTDOWN_GRACE": "60",
    }
    log = (tmp_path / "service.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.support.drain_app", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        with contextlib.suppress(requests.ConnectionError):
            return requests.get(f"{base}/health/ready", timeout=2).status_code == 200
        return False

    try:
        wait_until(ready, DEADLINE, "the service is ready", interval=0.05)
        yield proc, base
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        log.close()


def test_sigterm_drains_then_exits_with_the_request_in_flight_answered(
    service: tuple[subprocess.Popen[bytes], str],
) -> None:
    proc, base = service
    answers: list[requests.Response | BaseException] = []

    def in_flight() -> None:
        try:
            answers.append(requests.get(f"{base}/slow", timeout=DEADLINE))
        except BaseException as exc:  # reported by the assertion below
            answers.append(exc)

    client = threading.Thread(target=in_flight)
    client.start()
    wait_until(
        lambda: requests.get(f"{base}/count", timeout=2).json()["slow_started"] == 1,
        DEADLINE,
        "the slow request reached its handler",
    )

    proc.send_signal(signal.SIGTERM)

    def not_ready() -> dict[str, str] | None:
        resp = requests.get(f"{base}/health/ready", timeout=2)  # a Response of 503 is falsy
        return resp.json() if resp.status_code == 503 else None

    assert wait_until(not_ready, DEADLINE, "readiness answers 503") == {"status": "draining"}
    assert requests.get(f"{base}/health/live", timeout=2).status_code == 200  # still serving

    proc.send_signal(signal.SIGTERM)  # ends the drain delay: the listener closes

    def refused() -> bool:
        try:
            requests.get(f"{base}/health/live", timeout=2)
        except requests.ConnectionError:
            return True
        return False

    wait_until(refused, DEADLINE, "the listener is closed")
    assert proc.poll() is None  # still finishing the request in flight
    proc.send_signal(signal.SIGUSR1)  # the slow handler may answer now
    client.join(DEADLINE)
    assert len(answers) == 1 and not isinstance(answers[0], BaseException), answers
    assert answers[0].status_code == 200 and answers[0].json() == {"finished": True}
    assert proc.wait(timeout=DEADLINE) == 0
