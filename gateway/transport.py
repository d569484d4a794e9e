"""The gateway's upstream HTTP client interface, its aiohttp implementation and a mock.

Routing, auth and the proxy only see `Transport`: send an `OutboundRequest` to an origin and
get an `UpstreamResponse` (status, headers, a body stream). A faster client can replace
`AiohttpTransport` without touching them; unit tests use `MockTransport` with a handler
function, the way httpx's MockTransport works.

The contract every implementation keeps:

* `request.timeout` bounds the wait for the response headers (connect, send, wait); after
  that it bounds each wait for the next body chunk;
* the body is sent as given: bytes, or an async iterable streamed as it is produced;
* nothing is added or decompressed: no User-Agent, Accept or Accept-Encoding of its own,
  compressed bodies pass through as they are; redirects are never followed;
* lower-layer errors are translated here, once::

    TransportError
     +-- UpstreamUnavailable  (refused, reset, unreachable, broken mid-body: 502)
     +-- UpstreamTimeout      (no response, or no next chunk, in time: 504)
     +-- PoolTimeout          (every pooled connection stayed busy too long: 503)
"""

from __future__ import annotations

import asyncio
import inspect
from abc import ABC, abstractmethod
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

__all__ = [
    "AiohttpTransport",
    "Body",
    "MockResponse",
    "MockTransport",
    "OutboundRequest",
    "PoolTimeout",
    "Transport",
    "TransportError",
    "UpstreamResponse",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "split_url",
]

Body = bytes | AsyncIterable[bytes] | None
# A list of (name, value): the front server's fields, already without hop-by-hop ones.
Headers = Mapping[str, str] | CIMultiDict[str] | list[tuple[str, str]]


class TransportError(Exception):
    """The upstream exchange failed; the message says how, for logs (never for clients)."""


class UpstreamUnavailable(TransportError):
    pass


class NotSent(UpstreamUnavailable):
    """No connection could be made (refused, unreachable): nothing of the request left, so any
    method, a POST too, may go to another instance (as nginx's `proxy_next_upstream error`)."""


class UpstreamTimeout(TransportError):
    pass


class PoolTimeout(TransportError):
    """The upstream's connection limit was reached and no connection came free in time."""


def split_url(url: str) -> tuple[str, str]:
    """'http://h:1/p?q' -> ('http://h:1', '/p?q')."""
    parts = urlsplit(url)
    target = parts.path or "/"
    if parts.query:
        target += "?" + parts.query
    return f"{parts.scheme}://{parts.netloc}", target


@dataclass(slots=True)
class OutboundRequest:
    pool: str  # the upstream name: one pooled connection set per pool
    origin: str  # 'http://127.0.0.1:8102', no trailing slash
    method: str
    target: str  # path and query, already encoded
    headers: Headers
    body: Body = None
    timeout: float = 10.0

    @property
    def url(self) -> str:
        return self.origin + self.target

    def json(self) -> Any:
        """The body as JSON; only for bodies already read (what MockTransport hands over)."""
        assert isinstance(self.body, bytes | None)
        return orjson.loads(self.body or b"null")


class UpstreamResponse(ABC):
    status: int
    reason: str
    headers: Mapping[str, str] | CIMultiDictProxy[str]
    content_length: int | None

    @abstractmethod
    def iter_chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives; raises TransportError if the upstream breaks off."""

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self.iter_chunks()])

    @abstractmethod
    def close(self) -> None:
        """Give the connection back (or drop it when the body was not read to the end)."""


class Transport(ABC):
    @abstractmethod
    async def send(self, request: OutboundRequest) -> UpstreamResponse:
        """Send and return once the response headers are in; raise TransportError."""

    @abstractmethod
    async def close(self) -> None:
        """Release every pooled connection."""

    def replace_pool(self, pool: str, size: int) -> Callable[[], Awaitable[None]]:
        """Set `pool`'s size and detach its connections: later requests open new ones.

        Requests in flight keep the connections they hold; the returned coroutine function
        closes the detached connections (call it once they are done). Used by config reload.
        """

        async def nothing() -> None:
            return None

        return nothing


# --- aiohttp -------------------------------------------------------------------------------

_SKIP_AUTO = frozenset({"User-Agent", "Accept", "Accept-Encoding", "Content-Type"})


class _AiohttpResponse(UpstreamResponse):
    def __init__(self, resp: aiohttp.ClientResponse) -> None:
        self._resp = resp
        self.status = resp.status
        self.reason = resp.reason or ""
        self.headers = resp.headers
        self.content_length = resp.content_length

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        content = self._resp.content
        try:
            while True:
                chunk = await content.readany()
                if not chunk:
                    return
                yield chunk
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamTimeout("the upstream stalled while sending its body") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamUnavailable(f"the upstream broke off its body: {exc}") from exc

    async def read(self) -> bytes:
        try:
            return await self._resp.read()
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamTimeout("the upstream stalled while sending its body") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamUnavailable(f"the upstream broke off its body: {exc}") from exc

    def close(self) -> None:
        self._resp.release()


class AiohttpTransport(Transport):
    """One keep-alive `ClientSession` per pool (upstream), with that upstream's pool limit."""

    def __init__(
        self,
        pool_sizes: Mapping[str, int] | None = None,
        *,
        default_pool_size: int = 10,
        keepalive_timeout: float = 30.0,
    ) -> None:
        self._pool_sizes = dict(pool_sizes or {})
        self._default_pool_size = default_pool_size
        self._keepalive = keepalive_timeout
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}

    def _session(self, pool: str) -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=self._pool_sizes.get(pool, self._default_pool_size),
            limit_per_host=0,
            keepalive_timeout=self._keepalive,
            ttl_dns_cache=60,
        )
        session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            skip_auto_headers=_SKIP_AUTO,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(total=None),
        )
        self._sessions[pool] = session
        return session

    def _timeout(self, seconds: float) -> aiohttp.ClientTimeout:
        timeout = self._timeouts.get(seconds)
        if timeout is None:
            timeout = self._timeouts[seconds] = aiohttp.ClientTimeout(
                total=None, sock_connect=seconds, sock_read=seconds
            )
        return timeout

    async def send(self, request: OutboundRequest) -> UpstreamResponse:
        session = self._sessions.get(request.pool) or self._session(request.pool)
        try:
            async with asyncio.timeout(request.timeout):
                resp = await session.request(
                    request.method,
                    URL(request.origin + request.target, encoded=True),
                    headers=request.headers,
                    data=request.body,
                    allow_redirects=False,
                    timeout=self._timeout(request.timeout),
                )
        except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
            raise UpstreamTimeout(f"no response from {request.origin} in time") from exc
        except aiohttp.ClientConnectorError as exc:  # the connection itself failed
            raise NotSent(f"{request.origin} is unreachable: {exc}") from exc
        except aiohttp.ClientError as exc:
            raise UpstreamUnavailable(f"{request.origin} is unreachable: {exc}") from exc
        return _AiohttpResponse(resp)

    async def close(self) -> None:
        sessions, self._sessions = self._sessions, {}
        for session in sessions.values():
            await session.close()

    def replace_pool(self, pool: str, size: int) -> Callable[[], Awaitable[None]]:
        self._pool_sizes[pool] = size
        session = self._sessions.pop(pool, None)

        async def close() -> None:
            if session is not None:
                await session.close()

        return close


# --- mock ----------------------------------------------------------------------------------


class MockResponse(UpstreamResponse):
    """A canned answer: bytes, a JSON value, or an (async) iterable of chunks for streaming."""

    def __init__(
        self,
        status: int = 200,
        headers: Mapping[str, str] | Iterable[tuple[str, str]] | None = None,
        body: bytes | Iterable[bytes] | AsyncIterable[bytes] = b"",
        *,
        json: Any = None,
        reason: str = "",
    ) -> None:
        self.status = status
        self.reason = reason
        hdrs: CIMultiDict[str] = CIMultiDict(headers or {})
        if json is not None:
            body = orjson.dumps(json)
            hdrs.setdefault("Content-Type", "application/json")
        self.headers = CIMultiDictProxy(hdrs)
        self._body = body
        self.content_length = len(body) if isinstance(body, bytes) else None
        if self.content_length is not None:
            hdrs.setdefault("Content-Length", str(self.content_length))
        self.closed = False

    async def iter_chunks(self) -> AsyncIterator[bytes]:
        body = self._body
        if isinstance(body, bytes):
            if body:
                yield body
        elif isinstance(body, AsyncIterable):
            async for chunk in body:
                yield chunk
        else:
            for chunk in body:
                yield chunk

    def close(self) -> None:
        self.closed = True


MockHandler = Callable[[OutboundRequest], MockResponse | Awaitable[MockResponse]]


@dataclass
class MockTransport(Transport):
    """Calls `handler` with each request (body already read into bytes) instead of a socket.

    The handler may be sync or async, may raise `UpstreamUnavailable` to play a refused
    connection, and may sleep to play a slow upstream: `request.timeout` is enforced here as
    the real transport enforces it.
    """

    handler: MockHandler
    requests: list[OutboundRequest] = field(default_factory=list)
    closed: bool = False

    async def send(self, request: OutboundRequest) -> UpstreamResponse:
        try:
            async with asyncio.timeout(request.timeout):
                body = request.body
                if body is not None and not isinstance(body, bytes):
                    body = b"".join([chunk async for chunk in body])
                received = replace(request, headers=CIMultiDict(request.headers), body=body)
                self.requests.append(received)
                result = self.handler(received)
                if inspect.isawaitable(result):
                    result = await result
        except TimeoutError as exc:
            raise UpstreamTimeout(f"no response from {request.origin} in time") from exc
        assert isinstance(result, MockResponse), "a MockTransport handler returns MockResponse"
        return result

    async def close(self) -> None:
        self.closed = True
