"""The aiohttp adapter: a `web.Request` -> `Exchange` -> the route's chain -> a response.

`handle` is the aiohttp application's catch-all handler (the gateway's own endpoints come
first). Everything a request meets - routing, auth, rate limit, body limits, CORS, custom
policies, forwarding, aggregates - is the pipeline's (gateway.pipeline), shared with the
front server; this module only translates aiohttp's request into an `Exchange` and the
chain's answer into aiohttp's response.

Request bodies: the body-limit policy reads a small known-length body whole and streams a
larger or chunked one (`LimitedBody`). Response bodies of a small known length are read before
the answer starts (an upstream failure is still a clean 502); others are streamed.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import web

from chassis import REQUEST_ID_HEADER, Problem
from chassis.aiohttp import CLAIMS, REQUEST_ID, add_log_fields, set_route_name

from .pipeline.chain import Chain
from .pipeline.compile import Pipeline
from .pipeline.exchange import Exchange
from .pipeline.forwarding import response_headers
from .pipeline.stream import StreamAnswer
from .transport import TransportError, UpstreamResponse

__all__ = ["exchange_of", "handle", "read_whole"]

log = logging.getLogger("portico.gateway.proxy")

_READ_WHOLE_RESPONSE = 256 * 1024  # response bodies up to this size are read before answering
_NO_BODY_STATUS = frozenset({204, 304})


async def read_whole(upstream: UpstreamResponse, name: str) -> bytes:
    """A small answer's whole body before the answer starts: a failure is still a clean 502."""
    try:
        return await upstream.read()
    except TransportError as exc:
        log.warning("upstream body failed", extra={"upstream": name, "error": str(exc)})
        raise Problem(502, f"{name} broke off its answer") from None


def exchange_of(request: web.Request) -> Exchange:
    headers = request.headers
    ex = Exchange(
        request.method,
        request.raw_path,
        request.path,
        list(headers.items()),
        authorization=headers.get("Authorization"),
        host=request.host,
        forwarded_for=headers.getall("X-Forwarded-For", []),
        request_id=headers.get(REQUEST_ID_HEADER),
        origin=headers.get("Origin"),
        remote=request.remote,
        scheme=request.scheme,
    )
    ex.rid = request[REQUEST_ID]
    if request.body_exists:
        ex.body_stream = request.content
        length = request.content_length
        ex.content_length = -1 if length is None else length
    return ex


async def handle(pipeline: Pipeline, request: web.Request) -> web.StreamResponse:
    """Run `request` through `pipeline` and answer what its chain decided."""
    ex = exchange_of(request)
    ex.server = request
    future: asyncio.Future[None] | None = None
    finished = False

    def done(_ex: Exchange) -> None:
        nonlocal finished
        finished = True
        if future is not None and not future.done():
            future.set_result(None)

    ex.done = done
    pipeline.start(ex)
    if not finished:
        future = asyncio.get_running_loop().create_future()
        await future
    route = ex.route
    set_route_name(request, route.name if route is not None else "unmatched")
    if ex.fields:
        add_log_fields(request, **ex.fields)
    if ex.claims is not None:
        request[CLAIMS] = ex.claims
    chain = ex.chain
    assert chain is not None
    try:
        return await _respond(request, ex, chain)
    finally:
        chain.log(ex)


def _own(ex: Exchange, headers: Any) -> None:
    """The gateway's fields on every answer: request id, RateLimit, those policies added."""
    drop = ex.response_drop
    if drop:
        for name in drop:
            headers.popall(name, None)
    headers[REQUEST_ID_HEADER] = ex.rid
    rate = ex.rate
    if rate is not None:
        headers.setdefault("RateLimit-Policy", rate[0])
        headers.setdefault("RateLimit", rate[1])
    for name, value in ex.response_extra:
        headers.add(name, value)


async def _respond(request: web.Request, ex: Exchange, chain: Chain) -> web.StreamResponse:
    answer = ex.answer
    if answer is not None:
        if isinstance(answer, StreamAnswer):
            return await answer.run(request, ex, _own)  # SSE / WebSocket (ADR 0035)
        if answer.status == 408 and answer.problem is not None:
            raise answer.problem  # gateway.strict answers it and closes the connection
        response = web.Response(status=answer.status, body=answer.body or None)
        headers = response.headers
        for name, value in answer.headers:
            headers.add(name, value)
        _own(ex, headers)
        if chain.bodies and answer.body:
            response.body = chain.body(ex, answer.body, True)
        return response
    upstream: UpstreamResponse = ex.response
    try:
        return await _relay(request, ex, chain, upstream)
    finally:
        upstream.close()


async def _relay(
    request: web.Request, ex: Exchange, chain: Chain, upstream: UpstreamResponse
) -> web.StreamResponse:
    headers = response_headers(upstream.headers)
    _own(ex, headers)
    name = ex.route.upstream if ex.route is not None else ""
    length = upstream.content_length
    no_body = request.method == "HEAD" or upstream.status in _NO_BODY_STATUS
    whole: bytes | None = None
    if no_body:
        whole = b""
    elif length is not None and length <= _READ_WHOLE_RESPONSE:
        whole = await read_whole(upstream, name)
    if whole is not None:
        if chain.bodies and whole:
            whole = chain.body(ex, whole, True)
            headers.popall("Content-Length", None)
        # A plain Response: aiohttp sends head and body in one write, after we return.
        return web.Response(
            body=whole, status=upstream.status, reason=upstream.reason or None, headers=headers
        )
    if chain.bodies:
        headers.popall("Content-Length", None)
    response = web.StreamResponse(
        status=upstream.status, reason=upstream.reason or None, headers=headers
    )
    await response.prepare(request)
    try:
        async for chunk in upstream.iter_chunks():
            if chain.bodies:
                chunk = chain.body(ex, chunk, False)
            await response.write(chunk)
        if chain.bodies:
            tail = chain.body(ex, b"", True)
            if tail:
                await response.write(tail)
    except TransportError as exc:
        # Too late for a problem document: cut the connection so the client sees a
        # truncated body, never a complete-looking one.
        log.warning("upstream body failed", extra={"upstream": name, "error": str(exc)})
        if request.transport is not None:
            request.transport.close()
        return response
    await response.write_eof()
    return response
