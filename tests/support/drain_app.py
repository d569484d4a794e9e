"""A real aiohttp service process for the drain tests: the chassis' `install` and `run`, and
`GET /slow`, which answers only once the process got SIGUSR1, so a test holds a request in
flight for as long as it needs without a timed sleep on either side.

    python -m tests.support.drain_app PORT
"""

from __future__ import annotations

import asyncio
import signal
import sys

from aiohttp import web

from chassis import configure_logging
from chassis.aiohttp import install, run


def create_app() -> web.Application:
    app = web.Application()
    install(app, "drain-test")
    started = [0]
    gate = asyncio.Event()

    async def open_on_sigusr1(_app: web.Application) -> None:
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, gate.set)

    async def slow(_request: web.Request) -> web.Response:
        started[0] += 1
        await gate.wait()
        return web.json_response({"finished": True})

    async def count(_request: web.Request) -> web.Response:
        return web.json_response({"slow_started": started[0]})

    app.router.add_get("/slow", slow)
    app.router.add_get("/count", count)
    app.on_startup.append(open_on_sigusr1)
    return app


def main() -> None:
    configure_logging("drain-test")
    run(create_app(), "127.0.0.1", int(sys.argv[1]))


if __name__ == "__main__":
    main()
