"""Graceful drain on SIGTERM, the same in the gateway and every aiohttp service (ADR 0033).

A stop signal does not stop the process at once. In order:

1. readiness (`/health/ready`, the gateway's `/readyz`) answers 503 `{"status": "draining"}`
   at once, so a balancer or an orchestrator takes the instance out of rotation;
2. for `PORTICO_DRAIN_DELAY` seconds (default 0) the listener still accepts: the time a
   balancer needs to notice, as a Kubernetes `preStop` sleep gives it; a second signal ends it;
3. the listener closes, idle keep-alive connections are closed, requests in flight finish
   within `PORTICO_SHUTDOWN_GRACE` seconds (default 10); then the process exits 0.

The Flask services under gunicorn get the same steps in each worker from `chassis.gunicorn`
(gunicorn's `--config`); gunicorn itself then does step 3 within `--graceful-timeout`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .health import run_checks_async
from .settings import from_env

__all__ = ["DRAIN", "PROCESS_DRAIN", "Drain", "DrainSettings", "readiness", "until_stopped"]

log = logging.getLogger("portico.drain")

DRAINING = {"status": "draining"}


def _seconds(limit: float) -> Callable[[float], str | None]:
    def check(value: float) -> str | None:
        return None if 0 <= value <= limit else f"must be 0..{limit:g} seconds"

    return check


@dataclass(frozen=True)
class DrainSettings:
    """`PORTICO_DRAIN_DELAY` and `PORTICO_SHUTDOWN_GRACE`, validated at start-up."""

    drain_delay: float = field(default=0.0, metadata={"check": _seconds(300)})
    shutdown_grace: float = field(default=10.0, metadata={"check": _seconds(600)})

    @classmethod
    def from_env(cls) -> DrainSettings:
        return from_env(cls, "PORTICO_")


class Drain:
    """Whether this process has been told to stop; readiness reads it on every probe."""

    __slots__ = ("_listeners", "since")

    def __init__(self) -> None:
        self.since: float | None = None
        self._listeners: list[Callable[[], None]] = []

    def on_begin(self, listener: Callable[[], None]) -> None:
        """Call `listener` when the drain begins (at once if it has): what must not wait for
        the listener to close, such as live streams, ends there (ADR 0035)."""
        if self.since is not None:
            listener()
        else:
            self._listeners.append(listener)

    @property
    def draining(self) -> bool:
        return self.since is not None

    def begin(self) -> None:
        if self.since is None:
            self.since = time.monotonic()
            log.info("draining: readiness now answers 503")
            for listener in self._listeners:
                try:
                    listener()
                except Exception:
                    log.exception("drain listener failed")


DRAIN = web.AppKey("portico_drain", Drain)
# The drain of a process whose server is not an aiohttp application: a gunicorn worker of the
# Flask services (`chassis.gunicorn`), read by `chassis.flask`'s readiness.
PROCESS_DRAIN = Drain()


async def readiness(
    checks: Mapping[str, Callable[[], Any]], drain: Drain | None
) -> tuple[int, dict[str, Any]]:
    """503 at once while draining (no dependency is asked); else the named checks."""
    if drain is not None and drain.draining:
        return 503, dict(DRAINING)
    return await run_checks_async(checks)


async def until_stopped(
    drain: Drain,
    settings: DrainSettings,
    stop: Callable[[], Awaitable[None]],
    begin: Callable[[], None] | None = None,
) -> None:
    """Wait for SIGTERM or SIGINT, then drain (readiness 503, `begin()`, the delay) and call
    `stop`."""
    loop = asyncio.get_running_loop()
    signalled = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, signalled.set)
    try:
        await signalled.wait()
        drain.begin()
        if begin is not None:
            begin()
        if settings.drain_delay > 0:
            signalled.clear()  # a second signal cuts the delay short
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(signalled.wait(), settings.drain_delay)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
    log.info("stopping: no new connections, finishing requests in flight")
    await stop()
