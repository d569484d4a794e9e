"""Runs one provider for real on a free port, behind a small front that plays Pact's role of
a request filter.

The front (an aiohttp app on its own loop thread) forwards every request to the provider and
rewrites two things the contract cannot know in advance: ids the provider generates (a state
handler registers `alias -> real id`, and a path segment equal to an alias is replaced), and
the bearer token (a pact holds an example token; the front sends one the provider trusts).
Requests without `Authorization`, or with Basic credentials, pass unchanged. Tests use
`transform` to simulate a provider change without editing the service.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

__all__ = ["Backend", "LoopThread", "ProviderFront", "Transform", "free_port"]

# (method, path, status, headers, body) -> (status, headers, body): a simulated provider change
Transform = Callable[[str, str, int, CIMultiDict[str], bytes], tuple[int, CIMultiDict[str], bytes]]

_DROP = {"content-length", "transfer-encoding", "connection", "content-encoding", "keep-alive"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LoopThread:
    """An asyncio loop in a daemon thread: the home of aiohttp providers and the front."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=name, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 30.0) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        if not self.thread.is_alive():
            self.loop.close()


@dataclass
class Backend:
    """Where the provider listens, and how to stop it."""

    url: str
    stop: Callable[[], Awaitable[None] | None]


def serve_wsgi(app: Any) -> Backend:
    """A Flask app under werkzeug's threaded server, as gunicorn's gthread worker would."""
    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="contract-wsgi", daemon=True)
    thread.start()

    def stop() -> None:
        server.shutdown()
        thread.join(5)

    return Backend(f"http://127.0.0.1:{server.server_port}", stop)


async def serve_aiohttp(app: web.Application) -> Backend:
    """An aiohttp app on the current loop (call through LoopThread.run)."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    return Backend(f"http://127.0.0.1:{port}", runner.cleanup)


@dataclass
class ProviderFront:
    """The front the Pact verifier talks to; see the module docstring."""

    backend_url: str
    bearer: dict[str, str]  # {"token": ...}: shared with the provider's states
    aliases: dict[str, str] = field(default_factory=dict)
    transform: Transform | None = None
    port: int = 0
    _runner: web.AppRunner | None = None
    _session: aiohttp.ClientSession | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _path(self, path: str) -> str:
        return "/".join(self.aliases.get(seg, seg) for seg in path.split("/"))

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        headers = CIMultiDict(
            (k, v) for k, v in request.headers.items() if k.lower() not in _DROP | {"host"}
        )
        if headers.get("Authorization", "").startswith("Bearer "):
            headers["Authorization"] = f"Bearer {self.bearer['token']}"
        target = self._path(request.path)
        if request.query_string:
            target += "?" + request.query_string
        body = await request.read()
        async with self._session.request(
            request.method,
            self.backend_url + target,
            headers=headers,
            data=body or None,
            allow_redirects=False,
        ) as resp:
            status, raw = resp.status, await resp.read()
            out = CIMultiDict((k, v) for k, v in resp.headers.items() if k.lower() not in _DROP)
        if self.transform is not None:
            status, out, raw = self.transform(request.method, request.path, status, out, raw)
        return web.Response(status=status, body=raw, headers=out)

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(auto_decompress=True)
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.port = free_port()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
