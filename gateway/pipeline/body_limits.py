"""Body limits: the route's `max_body_bytes` (413) and `body_timeout` (408).

A declared length over the limit is refused before anything is read. On the aiohttp path a
small known-length body is read whole (one write upstream, a known length; within the body
timeout), and a larger or chunked one is streamed through `LimitedBody`, which stops past the
limit or when the body stalls, so the limit holds without buffering. The front server only
keeps requests whose body is all in (up to 64 KiB), so there it is one comparison.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from chassis import Problem

from ..routing import Route
from .exchange import Exchange
from .policy import Policy, Verdict

__all__ = [
    "READ_WHOLE_REQUEST",
    "BodyLate",
    "BodyLimit",
    "BodyTooLarge",
    "LimitedBody",
    "body_late",
    "too_large",
]

READ_WHOLE_REQUEST = 64 * 1024  # request bodies up to this size are read, not streamed


class BodyTooLarge(Exception):
    """The request body grew past the route's limit while streaming."""


class BodyLate(Exception):
    """The request body stopped arriving for longer than the route's body timeout."""


def too_large(limit: int) -> Problem:
    return Problem(413, f"the request body exceeds {limit} bytes", title="Content Too Large")


def body_late(timeout: float) -> Problem:
    """408: the body did not arrive in time. Both servers close the connection after it."""
    return Problem(408, f"the request body did not arrive within {timeout:g} s")


class LimitedBody:
    """The request body as an async iterable that stops past `limit` bytes, or when no byte
    of it arrives for `timeout` seconds."""

    __slots__ = ("_content", "exceeded", "late", "limit", "timeout")

    def __init__(self, content: Any, limit: int, timeout: float) -> None:
        self._content = content
        self.limit = limit
        self.timeout = timeout
        self.exceeded = False
        self.late = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        seen = 0
        content = self._content
        while True:
            try:
                async with asyncio.timeout(self.timeout):
                    chunk = await content.readany()
            except TimeoutError:
                self.late = True
                raise BodyLate from None
            if not chunk:
                return
            seen += len(chunk)
            if seen > self.limit:
                self.exceeded = True
                raise BodyTooLarge
            yield chunk


class BodyLimit(Policy):
    name = "body_limit"
    order = 500

    def __init__(self, settings: Any = None, context: Any = None) -> None:
        super().__init__(settings, context)
        self.limit = 0
        self.timeout = 0.0

    def bind(self, route: Route) -> Policy | None:
        bound = BodyLimit(None, self.context)
        bound.limit = route.max_body_bytes
        bound.timeout = route.body_timeout
        return bound

    def on_request(self, ex: Exchange) -> Verdict:
        if ex.content_length > self.limit:
            raise too_large(self.limit)
        stream = ex.body_stream
        if stream is None or isinstance(stream, LimitedBody):
            return None
        if 0 <= ex.content_length <= READ_WHOLE_REQUEST:
            return self._read(ex, stream)
        ex.body_stream = LimitedBody(stream, self.limit, self.timeout)
        return None

    async def _read(self, ex: Exchange, stream: Any) -> None:
        try:
            async with asyncio.timeout(self.timeout):
                ex.body = await stream.read()
        except TimeoutError:
            raise body_late(self.timeout) from None  # closes: gateway.strict
        ex.body_stream = None
