"""gunicorn's settings for the Flask services (`--config python:chassis.gunicorn`): the drain of
ADR 0033 in every worker.

gunicorn alone, on SIGTERM, has its master close the listeners and tell the workers to stop
accepting at once; but each worker still holds the listening socket it inherited, so a
connection made meanwhile (by a gateway that has not noticed yet) completes its handshake in
the backlog and is reset when the worker exits: a POST on it is lost. Here the worker's SIGTERM
first turns readiness to 503 `draining` (`chassis.drain.PROCESS_DRAIN`) and keeps serving for
`PORTICO_DRAIN_DELAY` seconds - long enough for health checks to take the instance out - and
only then stops as gunicorn does (requests in flight within `--graceful-timeout`, which must
exceed the delay). A second SIGTERM stops it at once.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType
from typing import Any

from chassis.drain import PROCESS_DRAIN, DrainSettings


def post_worker_init(worker: Any) -> None:
    delay = DrainSettings.from_env().drain_delay
    stop = worker.handle_exit  # gunicorn's: stop accepting, finish what is in flight, exit

    def handle_exit(sig: int, frame: FrameType | None) -> None:
        if PROCESS_DRAIN.draining or delay <= 0:
            PROCESS_DRAIN.begin()
            stop(sig, frame)
            return
        PROCESS_DRAIN.begin()
        timer = threading.Timer(delay, stop, (sig, frame))
        timer.daemon = True
        timer.start()

    worker.handle_exit = handle_exit
    signal.signal(signal.SIGTERM, handle_exit)  # init_signals registered the bound original
