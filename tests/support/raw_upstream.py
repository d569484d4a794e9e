"""A raw asyncio upstream that answers byte for byte, for the gateway's client tests.

A real aiohttp upstream cannot play the cases that matter to a proxy: a connection reset just
as a kept-alive connection is reused, `Connection: close`, a body delimited by EOF, a 103
before the answer, a malformed status line. `RawUpstream` parses each request with httptools
and lets the test script the exact bytes (or the reset) that go back.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import httptools

from tests.support.waiting import wait_until_async

__all__ = [
    "DEADLINE",
    "OK",
    "Answer",
    "RawFactory",
    "RawUpstream",
    "Seen",
    "raw_upstreams",
]

DEADLINE = 5.0
OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Type: text/plain\r\n\r\nok"


@dataclass
class Seen:
    """One request as the upstream received it."""

    conn: int
    method: str
    target: str
    headers: list[tuple[str, str]]
    body: bytes
    raw: bytes

    def header(self, name: str) -> str | None:
        found = [v for k, v in self.headers if k.lower() == name.lower()]
        return found[0] if found else None


# what the script answers: bytes to send, "close" (FIN, nothing sent), "reset" (RST),
# "hang" (never answer) or an async callable writing by itself
Answer = bytes | str | Callable[[asyncio.StreamWriter], Awaitable[None]]


class _Parse:
    """httptools callbacks collecting one request at a time."""

    def __init__(self, conn: int, out: list[Seen], first_byte: asyncio.Event) -> None:
        self.conn = conn
        self.out = out
        self.first_byte = first_byte
        self.parser = httptools.HttpRequestParser(self)
        self.raw = bytearray()
        self._reset()

    def _reset(self) -> None:
        self.target = ""
        self.headers: list[tuple[str, str]] = []
        self.body = bytearray()

    def feed(self, data: bytes) -> None:
        self.raw += data
        self.parser.feed_data(data)

    def on_url(self, url: bytes) -> None:
        self.target += url.decode()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode(), value.decode()))

    def on_body(self, body: bytes) -> None:
        self.first_byte.set()
        self.body += body

    def on_message_complete(self) -> None:
        method = self.parser.get_method().decode()
        raw, self.raw = bytes(self.raw), bytearray()
        self.out.append(Seen(self.conn, method, self.target, self.headers, bytes(self.body), raw))
        self._reset()


class RawUpstream:
    def __init__(self, script: Callable[[Seen], Answer]) -> None:
        self.script = script
        self.requests: list[Seen] = []
        self.connections = 0
        self.closed = 0
        self.first_byte = asyncio.Event()
        self.stopping = asyncio.Event()  # what "hang" waits for
        self.origin = ""
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> RawUpstream:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.origin = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self.stopping.set()
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            await wait_until_async(
                lambda: self.closed == self.connections,
                DEADLINE,
                "every connection closed",
                interval=0.01,
            )
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        done: list[Seen] = []
        parse = _Parse(self.connections, done, self.first_byte)
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                parse.feed(data)
                while done:
                    seen = done.pop(0)
                    self.requests.append(seen)
                    if not await self._answer(self.script(seen), writer):
                        return
        except (ConnectionError, httptools.HttpParserError):
            return
        finally:
            self.closed += 1
            self._writers.discard(writer)
            writer.close()

    async def _answer(self, answer: Answer, writer: asyncio.StreamWriter) -> bool:
        """Send one answer; False when the connection is to end."""
        if answer == "close":
            return False
        if answer == "reset":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()
            return False
        if answer == "hang":
            await self.stopping.wait()
            return False
        if isinstance(answer, bytes):
            writer.write(answer)
            await writer.drain()
            return b"connection: close" not in answer.lower()
        assert not isinstance(answer, str)
        await answer(writer)
        return not writer.is_closing()


RawFactory = Callable[[Callable[[Seen], Answer]], Awaitable[RawUpstream]]


@contextlib.asynccontextmanager
async def raw_upstreams() -> AsyncIterator[RawFactory]:
    """Start raw upstreams with `await start(script)`; all are stopped on the way out."""
    servers: list[RawUpstream] = []

    async def start(script: Callable[[Seen], Answer]) -> RawUpstream:
        servers.append(await RawUpstream(script).start())
        return servers[-1]

    try:
        yield start
    finally:
        for server in servers:
            await server.stop()
