"""The gateway's front server (`gateway.front`) as an aiohttp test server.

`aiohttp_client(FrontTestServer(app))` gives a `TestClient` whose requests go through the
front server on a free loopback port, exactly as `aiohttp_client(app)` does through aiohttp's:
the same tests then check both servers. `Wire` is one raw client connection, for what an HTTP
client library would not send (pipelining, malformed or duplicated fields).
"""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web
from aiohttp.test_utils import BaseTestServer
from yarl import URL

from gateway import strict
from gateway.app import STATE
from gateway.front import FrontServer

__all__ = ["DEADLINE", "AiohttpTestServer", "FrontTestServer", "Wire"]

DEADLINE = 5.0


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


class AiohttpTestServer(BaseTestServer):
    """The gateway on aiohttp's server alone, as `python -m gateway` serves it with
    GATEWAY_SERVER=aiohttp: its connections answer what aiohttp's parser refuses in
    problem+json (`gateway.strict.handlers`), which `aiohttp_server(app)` would not."""

    def __init__(self, app: web.Application) -> None:
        super().__init__(host="127.0.0.1")
        self.app = app
        self._listener: asyncio.Server | None = None

    async def start_server(self, **_kwargs: Any) -> None:
        if self._root is not None:
            return
        self.runner = web.AppRunner(self.app, access_log=None)
        await self.runner.setup()
        assert self.runner.server is not None
        self._listener = await asyncio.get_running_loop().create_server(
            strict.handlers(self.runner.server), "127.0.0.1", 0
        )
        self.port = self._listener.sockets[0].getsockname()[1]
        self._root = URL(f"http://127.0.0.1:{self.port}")

    async def _make_runner(self, **kwargs: Any) -> web.AppRunner:  # pragma: no cover
        raise NotImplementedError  # start_server builds its own runner

    async def close(self) -> None:
        if self._root is not None and not self._closed:
            assert self._listener is not None and self.runner is not None
            self._listener.close()
            await self.runner.cleanup()
            self._closed = True
            self._root = None
            self.port = None


class Wire:
    """One raw client connection; reads whole HTTP/1.1 answers (Content-Length framed)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def answer(self) -> tuple[int, dict[str, str], bytes]:
        async with asyncio.timeout(DEADLINE):
            head = await self.reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            status = int(lines[0].split()[1])
            headers = {}
            for line in lines[1:]:
                if line:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length", "0"))
            body = await self.reader.readexactly(length) if length else b""
        return status, headers, body

    async def closed(self) -> bool:
        """True once the server closed the connection, within the deadline: EOF, or a reset
        when the server closed with bytes of ours still unread (the kernel then sends RST)."""
        async with asyncio.timeout(DEADLINE):
            try:
                return await self.reader.read() == b""
            except ConnectionResetError:
                return True

    def close(self) -> None:
        self.writer.close()
