"""`chassis.drain` (ADR 0033): settings validated at start-up, readiness 503 without asking any
dependency while draining, and the signal sequence (a second signal cuts the delay short)."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from chassis import ConfigError
from chassis.drain import Drain, DrainSettings, readiness, until_stopped
from tests.support.waiting import wait_until_async


def test_settings_have_defaults_and_name_a_bad_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PORTICO_DRAIN_DELAY", raising=False)
    monkeypatch.delenv("PORTICO_SHUTDOWN_GRACE", raising=False)
    assert DrainSettings.from_env() == DrainSettings(drain_delay=0.0, shutdown_grace=10.0)
    monkeypatch.setenv("PORTICO_DRAIN_DELAY", "-1")
    monkeypatch.setenv("PORTICO_SHUTDOWN_GRACE", "soon")
    with pytest.raises(ConfigError) as caught:
        DrainSettings.from_env()
    assert "PORTICO_DRAIN_DELAY" in str(caught.value)
    assert "PORTICO_SHUTDOWN_GRACE" in str(caught.value)


async def test_readiness_asks_no_dependency_while_draining() -> None:
    asked: list[str] = []
    checks = {"db": lambda: asked.append("db")}
    drain = Drain()
    assert await readiness(checks, drain) == (200, {"status": "ok", "checks": {"db": "ok"}})
    drain.begin()
    assert await readiness(checks, drain) == (503, {"status": "draining"})
    assert asked == ["db"]


async def test_a_signal_drains_and_a_second_one_ends_the_delay() -> None:
    drain = Drain()
    events: list[str] = []

    async def stop() -> None:
        events.append(f"stop draining={drain.draining}")

    task = asyncio.create_task(
        until_stopped(
            drain,
            DrainSettings(drain_delay=600, shutdown_grace=1),
            stop,
            lambda: events.append("begin"),
        )
    )
    await asyncio.sleep(0)  # the handlers are installed
    os.kill(os.getpid(), signal.SIGTERM)
    await wait_until_async(lambda: drain.draining, 30, "the drain began")
    assert events == ["begin"] and not task.done()  # the delay: still serving
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.wait_for(task, 30)
    assert events == ["begin", "stop draining=True"]


def test_a_gunicorn_worker_drains_before_it_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    """`chassis.gunicorn`: the worker's SIGTERM turns readiness to 503 and stops the worker
    only after the delay; a second SIGTERM stops it at once."""
    import signal as signals

    from chassis import gunicorn
    from chassis.drain import PROCESS_DRAIN

    class Worker:
        alive = True

        def handle_exit(self, _sig: int, _frame: object) -> None:
            self.alive = False

    monkeypatch.setenv("PORTICO_DRAIN_DELAY", "120")
    monkeypatch.setattr(PROCESS_DRAIN, "since", None)
    previous = signals.getsignal(signals.SIGTERM)
    worker = Worker()
    try:
        gunicorn.post_worker_init(worker)
        assert signals.getsignal(signals.SIGTERM) == worker.handle_exit
        worker.handle_exit(signals.SIGTERM, None)
        assert PROCESS_DRAIN.draining and worker.alive  # readiness 503, still serving
        worker.handle_exit(signals.SIGTERM, None)
        assert not worker.alive
    finally:
        signals.signal(signals.SIGTERM, previous)


def test_flask_readiness_answers_503_while_the_worker_drains(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from flask import Flask

    from chassis.drain import PROCESS_DRAIN
    from chassis.flask import install

    app = Flask("drain-test")
    install(app, "drain-test", ready_checks={"db": lambda: None})
    client = app.test_client()
    monkeypatch.setattr(PROCESS_DRAIN, "since", None)
    assert client.get("/health/ready").status_code == 200
    PROCESS_DRAIN.begin()
    resp = client.get("/health/ready")
    assert resp.status_code == 503 and resp.get_json() == {"status": "draining"}
