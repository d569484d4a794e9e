"""The gateway's front server (`gateway.front`) as an aiohttp test server.

`aiohttp_client(FrontTestServer(app))` gives a `TestClient` whose requests go through the
front server on a free loopback port, exactly as `aiohttp_client(app)` does through aiohttp's:
the same tests then check both servers.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.test_utils import BaseTestServer
from yarl import URL

from gateway.app import STATE
from gateway.front import FrontServer

__all__ = ["FrontTestServer"]


class FrontTestServer(BaseTestServer):
    def __init__(self, app: web.Application, **front: Any) -> None:
        super().__init__(host="127.0.0.1")
        self.app = app
        self.front = FrontServer(app, app[STATE], **front)

    async def start_server(self, **_kwargs: Any) -> None:
        if self._root is not None:
            return
        await self.front.start("127.0.0.1", 0)
        self.port = self.front.sockets[0].getsockname()[1]
        self._root = URL(f"http://127.0.0.1:{self.port}")
        self.runner = self.front.runner

    async def _make_runner(self, **kwargs: Any) -> web.AppRunner:  # pragma: no cover
        raise NotImplementedError  # start_server builds the front server's own runner

    async def close(self) -> None:
        if self._root is not None and not self._closed:
            await self.front.close()
            self._closed = True
            self._root = None
            self.port = None
